"""RMSNorm: a Triton forward/backward (fp32 accumulation) beside its torch reference, and a module
for megatron-core layer specs that supports sequence parallelism.

y = x / sqrt(mean(x^2) + eps) * w, computed in fp32 and rounded once to the input dtype.
Backward: with x_hat = x * rstd, dx = rstd * (dy*w - x_hat * mean(dy*w*x_hat)) and
dw = sum over rows of dy * x_hat. The weight gradient is reduced in two stages: each program
accumulates its block of rows in fp32 registers, then the per-program partials are summed. The grid
puts several programs on each SM (`row_loop_grid`): one per SM left 7/8 of its warp slots empty.

Under sequence parallelism each tensor-parallel rank normalises its own slice of the tokens, so
its weight gradient is partial; the weight carries `sequence_parallel = True`, which is the mark
megatron-core's `finalize_model_grads` uses to all-reduce it across the TP group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton.language as tl

from megatron_infi.kernels._triton import device_kernel, next_power_of_2, row_loop_grid, warps_for


def rmsnorm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The definition, in fp32: the yardstick for tests."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return y.to(x.dtype)


def rmsnorm_torch(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The torch path (CPU and GPUs without Triton): torch's own fused rms_norm."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


@device_kernel
def _rmsnorm_fwd_kernel(X, W, Y, RSTD, stride_x, stride_y, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(RSTD + row, rstd)
    tl.store(Y + row * stride_y + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)


@device_kernel
def _rmsnorm_bwd_kernel(
    DY,
    X,
    W,
    RSTD,
    DX,
    DW_PARTIAL,
    stride_dy,
    stride_x,
    stride_dx,
    n_rows,
    n_cols,
    rows_per_program,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    first = row_start.to(tl.int64)
    x_ptr = X + first * stride_x
    dy_ptr = DY + first * stride_dy
    dx_ptr = DX + first * stride_dx
    rstd_ptr = RSTD + first
    for _ in range(row_start, row_end):
        x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr)
        x_hat = x * rstd
        wdy = w * dy
        c = tl.sum(x_hat * wdy, axis=0) / n_cols
        dx = (wdy - x_hat * c) * rstd
        tl.store(dx_ptr + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * x_hat
        x_ptr += stride_x
        dy_ptr += stride_dy
        dx_ptr += stride_dx
        rstd_ptr += 1
    tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw, mask=mask)


class _RMSNormTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        n_rows, n_cols = x2.shape
        y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block = next_power_of_2(n_cols)
        if n_rows:
            _rmsnorm_fwd_kernel[(n_rows,)](
                x2,
                weight,
                y,
                rstd,
                x2.stride(0),
                y.stride(0),
                n_cols,
                eps,
                BLOCK=block,
                num_warps=warps_for(block),
            )
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape = shape
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, weight, rstd = ctx.saved_tensors
        n_rows, n_cols = x2.shape
        dy2 = dy.reshape(-1, n_cols)
        if dy2.stride(-1) != 1:
            dy2 = dy2.contiguous()
        dx = torch.empty_like(x2)
        block = next_power_of_2(n_cols)
        warps = warps_for(block)
        programs, rows_per_program = row_loop_grid(n_rows, warps, x2.device)
        dw_partial = torch.empty((programs, n_cols), dtype=torch.float32, device=x2.device)
        if n_rows:
            _rmsnorm_bwd_kernel[(programs,)](
                dy2,
                x2,
                weight,
                rstd,
                dx,
                dw_partial,
                dy2.stride(0),
                x2.stride(0),
                dx.stride(0),
                n_rows,
                n_cols,
                rows_per_program,
                BLOCK=block,
                num_warps=warps,
            )
        else:
            dw_partial.zero_()
        dw = dw_partial.sum(0).to(weight.dtype)
        return dx.view(ctx.shape), dw, None


def rmsnorm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _RMSNormTriton.apply(x, weight, eps)


IMPLS = {"triton": rmsnorm_triton, "torch": rmsnorm_torch}


class RMSNorm(torch.nn.Module):
    """A megatron-core norm module (built with `config`, `hidden_size`, `eps`) with a `weight`
    parameter, so checkpoints match Transformer Engine's and torch's RMSNorm key for key."""

    def __init__(self, config, hidden_size: int, eps: float = 1e-5, impl: str = "torch", **_unused):
        super().__init__()
        if config.normalization != "RMSNorm":
            raise ValueError(f"RMSNorm module built for normalization={config.normalization!r}")
        if impl not in IMPLS:
            raise ValueError(f"unknown RMSNorm impl {impl!r} (expected one of {sorted(IMPLS)})")
        on_gpu = torch.cuda.is_available() and not config.use_cpu_initialization
        device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype, device=device))
        # megatron-core all-reduces grads of parameters marked like this across the TP group.
        self.weight.sequence_parallel = config.sequence_parallel
        self.eps = eps
        self.impl = impl
        self._fn = IMPLS[impl]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, impl={self.impl}"
