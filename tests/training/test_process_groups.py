"""A second model-parallel setup in one process (in-process trainers: tests, notebooks) releases the
first one's process groups: each gloo group keeps threads that poll for the life of the process."""

import os
from pathlib import Path

import pytest
import torch.distributed as dist

from megatron_infi.training.distributed import init_model_parallel

TASKS = Path(f"/proc/{os.getpid()}/task")


@pytest.mark.skipif(not TASKS.is_dir() or "RANK" in os.environ, reason="counts threads in /proc")
def test_setting_up_again_does_not_keep_the_old_groups():
    init_model_parallel(1, 1)
    threads = len(list(TASKS.iterdir()))
    for _ in range(3):
        init_model_parallel(1, 1)
    # before: each setup added ~20 gloo groups of 3 threads (60 threads) that never ended
    assert len(list(TASKS.iterdir())) < threads + 10
    assert dist.get_world_size() == 1 and dist.get_rank() == 0
