"""SwiGLU: silu(gate) * up in one pass over the fc1 output, forward and backward, in Triton, beside
its torch reference; and the megatron-core MLP that uses it.

megatron-core's gated fc1 produces [..., 2F] laid out as [gate | up] on every TP rank (its
`stride=2` sharding keeps each rank's slice in that order). The unfused path launches a split,
a silu, a multiply and, in backward, five more elementwise kernels with an [.., F] intermediate
saved; the kernels here read the fc1 output once and save only it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton.language as tl
from megatron.core.transformer.mlp import MLP

from megatron_infi.kernels._triton import device_kernel

BLOCK = 1024


def swiglu_reference(x: torch.Tensor) -> torch.Tensor:
    """The definition, in fp32."""
    gate, up = torch.chunk(x.float(), 2, dim=-1)
    return (F.silu(gate) * up).to(x.dtype)


def swiglu_torch(x: torch.Tensor) -> torch.Tensor:
    """The torch path: what megatron-core's unfused gated MLP computes."""
    gate, up = torch.chunk(x, 2, dim=-1)
    return F.silu(gate) * up


@device_kernel
def _swiglu_fwd_kernel(X, Y, stride_x, stride_y, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    x_row = X + row * stride_x
    gate = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_row + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    y = gate * tl.sigmoid(gate) * up
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@device_kernel
def _swiglu_bwd_kernel(X, DY, DX, stride_x, stride_dy, stride_dx, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    x_row = X + row * stride_x
    gate = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_row + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(gate)
    silu = gate * sig
    d_gate = dy * up * sig * (1.0 + gate * (1.0 - sig))
    d_up = dy * silu
    dx_row = DX + row * stride_dx
    tl.store(dx_row + cols, d_gate.to(DX.dtype.element_ty), mask=mask)
    tl.store(dx_row + n_cols + cols, d_up.to(DX.dtype.element_ty), mask=mask)


def _rows(x: torch.Tensor) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


class _SwiGLUTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2:
            raise ValueError(f"SwiGLU needs an even last dimension, got {tuple(x.shape)}")
        x2 = _rows(x)
        n_rows, n_cols = x2.shape[0], x2.shape[1] // 2
        y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
        if n_rows:
            grid = (n_rows, -(-n_cols // BLOCK))
            _swiglu_fwd_kernel[grid](x2, y, x2.stride(0), y.stride(0), n_cols, BLOCK=BLOCK, num_warps=4)
        ctx.save_for_backward(x2)
        ctx.shape = x.shape
        return y.view(*x.shape[:-1], n_cols)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> torch.Tensor:
        (x2,) = ctx.saved_tensors
        n_rows, n_cols = x2.shape[0], x2.shape[1] // 2
        dy2 = _rows(dy)
        dx = torch.empty_like(x2)
        if n_rows:
            grid = (n_rows, -(-n_cols // BLOCK))
            _swiglu_bwd_kernel[grid](
                x2, dy2, dx, x2.stride(0), dy2.stride(0), dx.stride(0), n_cols, BLOCK=BLOCK, num_warps=4
            )
        return dx.view(ctx.shape)


def swiglu_triton(x: torch.Tensor) -> torch.Tensor:
    return _SwiGLUTriton.apply(x)


class SwiGLUMLP(MLP):
    """megatron-core's MLP (same parameters, sharding and checkpoint keys) with the fused SwiGLU.

    Only the activation differs from the parent's forward, which picks its activation from config
    flags; overriding forward keeps the TransformerConfig untouched.
    """

    def __init__(self, config, submodules, *args, **kwargs):
        super().__init__(config, submodules, *args, **kwargs)
        if not config.gated_linear_unit or config.activation_func is not F.silu:
            raise ValueError("SwiGLUMLP needs gated_linear_unit=True and activation_func=F.silu")
        if config.activation_func_clamp_value is not None or config.glu_linear_offset:
            raise ValueError("SwiGLUMLP does not support clamped or offset GLU")

    def forward(self, hidden_states: torch.Tensor, per_token_scale: torch.Tensor | None = None, **kwargs):
        if per_token_scale is not None:
            raise NotImplementedError("SwiGLUMLP is a dense MLP (no per-token expert scales)")
        intermediate, bias = self.linear_fc1(hidden_states)
        if bias is not None:
            intermediate = intermediate + bias
        return self.linear_fc2(swiglu_triton(intermediate))
