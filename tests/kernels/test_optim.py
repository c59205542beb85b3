"""Switching megatron-core's torch AdamW fallback to the fused kernel and back: the same updates as
torch's default implementation, including a switch after steps were taken (CPU here: torch has a
fused AdamW for CPU too; the GPU case runs where there is one)."""

from __future__ import annotations

import pytest
import torch

from megatron_infi.kernels.optim import set_fused_adam

KWARGS = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)


def _params(device: str) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(*shape, generator=gen).to(device)) for shape in ((64, 32), (32,))]


def _grads(steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(shape, generator=gen) for shape in ((64, 32), (32,))] for _ in range(steps)]


def _train(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.to(p.device)
        opt.step()


def _check_switch(device: str, switch_after: int, steps: int = 6) -> None:
    grads = _grads(steps)
    ref_params, params = _params(device), _params(device)
    reference = torch.optim.AdamW(ref_params, **KWARGS)
    opt = torch.optim.AdamW(params, **KWARGS)
    _train(reference, ref_params, grads)
    _train(opt, params, grads[:switch_after])
    assert set_fused_adam([opt], fused=True) == 1 and opt.param_groups[0]["fused"]
    _train(opt, params, grads[switch_after : steps - 1])
    assert all(opt.state[p]["step"].device == p.device for p in params)
    assert set_fused_adam([opt], fused=False) == 1 and not opt.param_groups[0]["fused"]
    _train(opt, params, grads[steps - 1 :])  # and back to the default implementation
    for a, b, initial in zip(params, ref_params, _params(device), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(a, initial)


@pytest.mark.parametrize("switch_after", [0, 2])
def test_fused_matches_default_cpu(switch_after):
    _check_switch("cpu", switch_after)


def test_other_optimizers_and_frozen_groups_are_left_alone():
    sgd = torch.optim.SGD(_params("cpu"), lr=0.1)
    capturable = torch.optim.AdamW(_params("cpu"), lr=1e-3, capturable=True)
    assert set_fused_adam([sgd, capturable], fused=True) == 0
    assert not capturable.param_groups[0].get("fused")


@pytest.mark.gpu
@pytest.mark.parametrize("switch_after", [0, 2])
def test_fused_matches_default_gpu(switch_after):
    _check_switch("cuda", switch_after)
