"""Switching megatron-core's torch AdamW fallback to the fused kernel: the same updates as foreach
(GPU), including a switch after steps were taken; CPU optimizers are left alone."""

from __future__ import annotations

import pytest
import torch

from megatron_infi.kernels.optim import use_fused_adam


def _params(device: str) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(*shape, generator=gen).to(device)) for shape in ((64, 32), (32,))]


def _train(opt, params, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.device)
        opt.step()


def test_cpu_optimizers_are_left_alone():
    opt = torch.optim.AdamW(_params("cpu"), lr=1e-3)
    assert use_fused_adam([opt, torch.optim.SGD(_params("cpu"), lr=0.1)]) == 0
    assert not opt.param_groups[0].get("fused")


@pytest.mark.gpu
@pytest.mark.parametrize("switch_after", [0, 2])
def test_fused_matches_foreach(switch_after):
    ref_params, params = _params("cuda"), _params("cuda")
    kwargs = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    reference = torch.optim.AdamW(ref_params, foreach=True, **kwargs)
    opt = torch.optim.AdamW(params, foreach=True, **kwargs)
    _train(reference, ref_params, 5)
    _train(opt, params, switch_after)
    assert use_fused_adam([opt]) == 1 and opt.param_groups[0]["fused"]
    gen_state = torch.Generator().manual_seed(1)
    for _ in range(switch_after):  # replay the grads already consumed, then the rest
        for p in params:
            torch.randn(p.shape, generator=gen_state)
    for _ in range(5 - switch_after):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen_state).to(p.device)
        opt.step()
    for a, b in zip(params, ref_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
