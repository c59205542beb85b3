"""Pretrain or anneal a model on megatron-core; one process per GPU, under torchrun.

    torchrun --nproc-per-node N -m megatron_infi.train --config X.yaml [key=value ...]
    infi train --config X.yaml --dry-run        # check it and print the resolved config

Pretraining and annealing are the same program; `stage: anneal` starts from `checkpoint.load`
with its own data blend and schedule. A run restarted with the same run_dir resumes exactly.

input:
  data.blend: Megatron indexed datasets (<prefix>.bin / .idx, one EOD token after each document), by
  `prefix`, or by `domain` inside `data.dir` (the output_dir of `infi data pretrain`, whose
  manifest.json is checked against data.tokenizer), each with a sampling weight:
    data: {tokenizer: runs/data/tokenizer, dir: runs/data/out,
           blend: [{domain: web, weight: 0.7}, {prefix: /data/math_text_document, weight: 0.3}]}
  data.tokenizer: an HF tokenizer dir; checkpoint.load (optional): a checkpoint root to start from
  (`infi convert from-hf`'s --out, or a pretraining run's <run_dir>/checkpoints)

output (under run_dir):
  checkpoints/iter_XXXXXXX/          megatron-core distributed checkpoints with run.json (resolved
  checkpoints/latest_checkpointed_iteration.txt   config, tokenizer, data position): the input of
                                     `infi convert to-hf --load <run_dir>/checkpoints`
  config.yaml, logs/train_metrics.jsonl, tensorboard/, cache/ (dataset index caches)

example config: launch/configs/demo/pretrain.yaml, anneal.yaml (toy, 2 CPU processes);
launch/configs/pretrain/infir_1b_pretrain.yaml, infir_1b_anneal.yaml (paper scale)
"""

from __future__ import annotations

import logging
import os
import sys

import megatron_infi.models  # noqa: F401  (registers the architectures model.preset / model.arch name)
from megatron_infi.config.core import parse_stage_config
from megatron_infi.config.schema import TrainConfig
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    # megatron-core logs its own INFO chatter per rank; keep warnings.
    logging.getLogger("megatron").setLevel(logging.WARNING)


def preflight(cfg: TrainConfig, dry_run: bool) -> None:
    """Checks that need no data read and no process group, so every rank exits 2 before joining a
    group: the layout fits the world torchrun launched (WORLD_SIZE), and the input paths exist (a dry
    run notes those an earlier stage will write)."""
    if "WORLD_SIZE" in os.environ:
        cfg.validate_world(int(os.environ["WORLD_SIZE"]))
    cfg.check_inputs(dry_run).print_notes("train")


@command("infi train")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    cfg, dry_run = parse_stage_config(TrainConfig, "infi train", __doc__, argv, preflight=preflight)
    if dry_run:
        return 0
    _setup_logging()
    from megatron_infi.training import patches

    patches.apply()
    from megatron_infi.training.distributed import shutdown
    from megatron_infi.training.trainer import Trainer

    try:
        trainer = Trainer(cfg).setup()
        trainer.run()
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
