"""SwiGLU: the Triton kernel and megatron's unfused form against the fp32 definition."""

from __future__ import annotations

import pytest
import torch

from megatron_infi.kernels.swiglu import swiglu_reference, swiglu_torch, swiglu_triton
from tests.kernels._util import DTYPES, TOL, assert_close_rel, device


def _check(fn, shape, dtype, dev, tol, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).mul(2).to(dev, dtype).requires_grad_()
    dy = torch.randn(*shape[:-1], shape[-1] // 2, generator=gen).to(dev, dtype)
    y = fn(x)
    y.backward(dy)
    x32 = x.detach().float().requires_grad_()
    ref = swiglu_reference(x32)
    ref.backward(dy.float())
    assert y.dtype == dtype and y.shape == ref.shape
    assert_close_rel(y, ref, tol, "y")
    assert_close_rel(x.grad, x32.grad, tol, "dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(5, 64), (3, 2, 2 * 1500), (1, 2)])
def test_triton_matches_reference(shape, dtype):
    _check(swiglu_triton, shape, dtype, torch.device("cpu"), TOL[dtype])


def test_torch_path_matches_reference():
    # megatron's unfused form rounds silu(gate) before the product: allow two roundings in bf16.
    _check(swiglu_torch, (4, 3, 256), torch.float32, torch.device("cpu"), TOL[torch.float32])
    _check(swiglu_torch, (4, 3, 256), torch.bfloat16, torch.device("cpu"), 2 * TOL[torch.bfloat16])


def test_noncontiguous_input_and_odd_width():
    base = torch.randn(8, 2, 64)
    x = base.transpose(0, 1)  # non-contiguous rows
    assert_close_rel(swiglu_triton(x), swiglu_reference(x), TOL[torch.float32])
    with pytest.raises(ValueError, match="even"):
        swiglu_triton(torch.randn(3, 5))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(4096, 2, 2 * 8192), (1000, 2 * 18944)])
def test_triton_matches_reference_gpu(shape, dtype):
    _check(swiglu_triton, shape, dtype, device(), TOL[dtype])
