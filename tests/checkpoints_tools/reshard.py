"""Under torchrun: load each given checkpoint into the trainer's model at the given TP/PP (weights
only, as `checkpoint.load` does) and save it again from that layout, so each rank writes its own
TP/PP shards.

    torchrun --nproc-per-node 4 tests/checkpoints_tools/reshard.py TP PP SRC:DST [SRC:DST ...]
"""

from __future__ import annotations

import dataclasses
import sys


def main(argv: list[str]) -> None:
    from megatron_infi.checkpoints_tools.mcore_io import McoreCheckpoint
    from megatron_infi.models.gpt import build_model
    from megatron_infi.training import patches
    from megatron_infi.training.checkpoint import load_checkpoint, save_weights
    from megatron_infi.training.distributed import init_model_parallel, shutdown

    patches.apply()
    tp, pp = int(argv[0]), int(argv[1])
    init_model_parallel(tp, pp)
    for pair in argv[2:]:
        src, dst = pair.split(":")
        ckpt = McoreCheckpoint(src)
        parallel = dataclasses.replace(ckpt.cfg.parallel, tensor=tp, pipeline=pp)
        cfg = dataclasses.replace(ckpt.cfg, parallel=parallel)
        chunks, _ = build_model(cfg)
        load_checkpoint(ckpt.dir, chunks, load_optimizer=False, load_train_state=False)
        save_weights(
            dst, cfg, chunks, ckpt.info.get("tokenizer"), iteration=5, source=ckpt.info.get("source")
        )
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
