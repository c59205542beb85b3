"""Process-group and model-parallel setup: the one place that picks gloo (CPU) or NCCL (GPU)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_infi.training import patches


def backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


@dataclass
class WorldInfo:
    rank: int
    world_size: int
    local_rank: int
    tensor: int
    pipeline: int
    data: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ


def init_process_group(timeout_minutes: int = 30) -> tuple[int, int, int]:
    """Join torchrun's group, or form a one-process group when launched without torchrun."""
    patches.require_applied()
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        timeout = datetime.timedelta(minutes=timeout_minutes)
        if launched_by_torchrun():
            dist.init_process_group(backend(), timeout=timeout)
        else:
            # One process without torchrun: an in-memory store, no port to find or race for.
            dist.init_process_group(backend(), store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def init_model_parallel(tensor: int, pipeline: int, virtual_pipeline: int = 1, seed: int = 1234) -> WorldInfo:
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    if parallel_state.model_parallel_is_initialized():
        # A second setup in one process (in-process trainers in tests, notebooks): megatron-core's
        # destroy_model_parallel only forgets its ~20 groups, and each gloo group keeps threads
        # that poll for the life of the process (a test session reached 450 groups burning more
        # than a core). The one-process world we formed ourselves starts again from no groups;
        # torchrun's world cannot be formed twice (its store keeps the first rendezvous).
        if launched_by_torchrun():
            parallel_state.destroy_model_parallel()
        else:
            shutdown()
    rank, world, local_rank = init_process_group()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor,
        pipeline_model_parallel_size=pipeline,
        virtual_pipeline_model_parallel_size=virtual_pipeline if virtual_pipeline > 1 else None,
        create_gloo_process_groups=torch.cuda.is_available(),
    )
    # Same seed on every rank: data-parallel replicas must start identical; the tracker derives
    # per-TP-rank streams for dropout inside tensor-parallel regions.
    torch.manual_seed(seed)
    model_parallel_cuda_manual_seed(seed)
    return WorldInfo(rank, world, local_rank, tensor, pipeline, world // (tensor * pipeline))


def shutdown() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
