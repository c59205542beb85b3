"""Sequence parallelism with our RMSNorm, on two gloo ranks (tensor=2): a forward/backward with
sequence_parallel gives the same loss and, after megatron-core's `finalize_model_grads`, the same
gradients as without it. Under SP each rank normalises only its slice of the tokens, so the norm
weights' gradients are partial until megatron-core all-reduces the weights our module marks."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = [
    pytest.mark.dist,
    pytest.mark.skipif(
        torch.cuda.is_available(), reason="the CPU (gloo, fp32) check; GPUs run test_model_gpu.py"
    ),
]
WORLD = 2


def _run(sequence_parallel: bool, kernels: str):
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    from megatron_infi.config.core import from_dict
    from megatron_infi.config.schema import TrainConfig
    from megatron_infi.models.gpt import build_model

    model = {
        "preset": "tiny", "vocab_size": 512, "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128,
        "num_attention_heads": 4, "num_query_groups": 2, "kernels": kernels,
    }  # fmt: skip
    parallel = {"tensor": WORLD, "sequence_parallel": sequence_parallel}
    cfg = from_dict(TrainConfig, TrainConfig.preprocess({"model": model, "parallel": parallel}))
    torch.manual_seed(11)
    model_parallel_cuda_manual_seed(11)
    (chunk,), tconfig = build_model(cfg)
    ddp = DistributedDataParallel(
        config=tconfig, ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True), module=chunk
    )
    tconfig.finalize_model_grads_func = finalize_model_grads
    gen = torch.Generator().manual_seed(0)
    b, s = 2, 16
    tokens = torch.randint(0, 512, (b, s), generator=gen)
    labels = torch.randint(0, 512, (b, s), generator=gen)
    loss = ddp(tokens, torch.arange(s)[None].expand(b, s), None, labels=labels)
    loss.sum().backward()
    finalize_model_grads([ddp])
    grads = {name: p.main_grad.clone() for name, p in ddp.module.named_parameters()}
    return loss.detach(), grads


def _worker(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TRITON_INTERPRET="1")
    torch.set_num_threads(1)
    from megatron_infi.training import patches
    from megatron_infi.training.distributed import init_model_parallel, shutdown

    patches.apply()
    init_model_parallel(WORLD, 1, seed=11)
    try:
        for kernels in ("torch", "triton"):
            _compare(kernels)
    finally:
        shutdown()


def _compare(kernels: str) -> None:
    loss, grads = _run(False, kernels)
    loss_sp, grads_sp = _run(True, kernels)
    torch.testing.assert_close(loss_sp, loss, rtol=1e-5, atol=1e-5)
    norms = [name for name in grads if "layernorm" in name]
    assert len(norms) == 5, norms  # 2 layers x 2 pre-norms + the final norm
    for name, grad in grads.items():
        torch.testing.assert_close(
            grads_sp[name], grad, rtol=1e-5, atol=1e-6, msg=lambda m, n=f"{kernels} {name}": f"{n}: {m}"
        )


def test_sequence_parallel_matches_tensor_parallel():
    """Both local backends (torch, and triton in the interpreter) in one pair of processes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_worker, args=(port,), nprocs=WORLD, start_method="spawn")
