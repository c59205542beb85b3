"""RMSNorm: the Triton kernel (interpreted on CPU, compiled on GPU) and the torch path against the
fp32 definition, forward and backward; the megatron-core module's contract."""

from __future__ import annotations

import pytest
import torch
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_infi.kernels.rmsnorm import RMSNorm, rmsnorm_reference, rmsnorm_torch, rmsnorm_triton
from tests.kernels._util import DTYPES, TOL, assert_close_rel, device

EPS = 1e-5


def _check(fn, shape, dtype, dev, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).mul(3).to(dev, dtype).requires_grad_()
    w = (1 + 0.2 * torch.randn(shape[-1], generator=gen)).to(dev, dtype).requires_grad_()
    dy = torch.randn(shape, generator=gen).to(dev, dtype)
    y = fn(x, w, EPS)
    y.backward(dy)
    x32 = x.detach().float().requires_grad_()
    w32 = w.detach().float().requires_grad_()
    ref = rmsnorm_reference(x32, w32, EPS)
    ref.backward(dy.float())
    assert y.dtype == dtype
    assert_close_rel(y, ref, TOL[dtype], "y")
    assert_close_rel(x.grad, x32.grad, TOL[dtype], "dx")
    assert_close_rel(w.grad, w32.grad, TOL[dtype], "dw")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(6, 64), (3, 5, 100), (1, 256)])
def test_triton_matches_reference(shape, dtype):
    _check(rmsnorm_triton, shape, dtype, torch.device("cpu"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_path_matches_reference(dtype):
    _check(rmsnorm_torch, (4, 7, 96), dtype, torch.device("cpu"))


def test_triton_bf16_at_model_hidden_size():
    _check(rmsnorm_triton, (6, 2048), torch.bfloat16, torch.device("cpu"))


H100 = (132, 2048)  # multiprocessors, resident threads per multiprocessor
LLAMA_HIDDEN = 2048


def _h100_grid(monkeypatch, n_rows: int) -> tuple[int, int, int]:
    from megatron_infi.kernels import _triton

    monkeypatch.setattr(_triton, "sm_resources", lambda device: H100)
    warps = _triton.warps_for(LLAMA_HIDDEN)
    return (*_triton.row_loop_grid(n_rows, warps, torch.device("cuda")), warps)


@pytest.mark.parametrize("n_rows", [1, 3, 1000, 8192 + 7])
def test_backward_grid_covers_every_row_with_no_idle_program(monkeypatch, n_rows):
    programs, rows_per_program, _ = _h100_grid(monkeypatch, n_rows)
    assert (programs - 1) * rows_per_program < n_rows <= programs * rows_per_program


@pytest.mark.parametrize("n_rows", [2 * 4096, 8 * 4096])
def test_backward_grid_fills_the_gpu(monkeypatch, n_rows):
    """RMSNorm backward on llama3.2-1b micro-batches (2 or 8 x 4096 tokens, hidden 2048: 8-warp
    programs) on an H100 keeps at least 40% of the SMs' thread slots busy (one program per SM, the
    former grid, kept 12.5%), while the fp32 dW partials (written, then read by the reduction) stay
    under 10% of the x, dy, dx traffic."""
    programs, _, warps = _h100_grid(monkeypatch, n_rows)
    assert programs * warps * 32 >= 0.4 * H100[0] * H100[1]
    partial_bytes = 2 * programs * LLAMA_HIDDEN * 4
    assert partial_bytes <= 0.1 * 3 * n_rows * LLAMA_HIDDEN * 2


@pytest.mark.parametrize("programs_per_sm", [1, 8])
def test_triton_backward_with_many_short_programs(monkeypatch, programs_per_sm):
    """The interpreter with a grid like the GPU's: 37 rows over 4 programs, or 19 of 2 rows."""
    from megatron_infi.kernels import _triton

    monkeypatch.setattr(_triton, "sm_resources", lambda device: (4, 32 * 4 * 2 * programs_per_sm))
    _check(rmsnorm_triton, (37, 64), torch.float32, torch.device("cpu"))


def test_no_rows():
    x = torch.empty(0, 32, requires_grad=True)
    w = torch.ones(32, requires_grad=True)
    rmsnorm_triton(x, w, EPS).sum().backward()
    assert w.grad.shape == (32,) and not w.grad.any()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 4096, 2048), (4096, 3584), (1000, 2048)])
def test_triton_matches_reference_gpu(shape, dtype):
    _check(rmsnorm_triton, shape, dtype, device())


def _config(sequence_parallel: bool) -> TransformerConfig:
    return TransformerConfig(
        num_layers=1,
        hidden_size=32,
        num_attention_heads=4,
        normalization="RMSNorm",
        tensor_model_parallel_size=2 if sequence_parallel else 1,
        sequence_parallel=sequence_parallel,
        use_cpu_initialization=True,
    )


@pytest.mark.parametrize("sequence_parallel", [False, True])
def test_module_marks_weight_for_sequence_parallel(sequence_parallel):
    norm = RMSNorm(_config(sequence_parallel), 32, eps=1e-6, impl="triton")
    # megatron-core all-reduces grads of parameters carrying this mark across the TP group.
    assert norm.weight.sequence_parallel is sequence_parallel
    assert list(norm.state_dict()) == ["weight"]
    assert torch.equal(norm.weight, torch.ones(32))
    x = torch.randn(3, 2, 32)
    assert_close_rel(norm(x), rmsnorm_reference(x, norm.weight, 1e-6), TOL[torch.float32])


def test_module_rejects_unknown_impl_and_layernorm():
    with pytest.raises(ValueError, match="impl"):
        RMSNorm(_config(False), 32, impl="cuda")
    config = _config(False)
    config.normalization = "LayerNorm"
    with pytest.raises(ValueError, match="LayerNorm"):
        RMSNorm(config, 32)
