"""`python -m megatron_infi.train --config X.yaml [key=value ...]` (run under torchrun).

Pretraining and annealing are the same program; `stage: anneal` starts from `checkpoint.load`
with its own data blend and schedule.
"""

from __future__ import annotations

import logging
import os
import sys

import megatron_infi.models  # noqa: F401  (registers the architectures model.preset / model.arch name)
from megatron_infi.config.core import ConfigError, parse_stage_config
from megatron_infi.config.schema import TrainConfig


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


def main(argv: list[str] | None = None) -> int:
    cfg, dry_run = parse_stage_config(TrainConfig, "Pretrain or anneal a model on megatron-core.", argv)
    if dry_run:
        return 0
    _setup_logging()
    from megatron_infi.data.gpt_data import DataError
    from megatron_infi.training.checkpoint import CheckpointError
    from megatron_infi.training.distributed import shutdown
    from megatron_infi.training.trainer import Trainer

    try:
        trainer = Trainer(cfg).setup()
        trainer.run()
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
