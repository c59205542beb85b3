"""Rotary position embedding applied to q and k (in place where autograd allows), in one Triton kernel (forward and
backward), beside the torch reference; the llama3 frequency scaling; and the megatron-core
self-attention that uses the kernel.

Layout is megatron's [seq, batch, heads, head_dim] with the non-interleaved (rotate-half)
convention: for x = [x1 | x2], y = [x1*cos - x2*sin | x2*cos + x1*sin]. The angles come from
megatron-core's RotaryEmbedding ([seq, 1, 1, head_dim] fp32, the two halves equal), so the llama3
scaling is whatever that module applied; `llama3_inv_freq` restates it for tests and conversion.
cos/sin are computed in fp32 inside the kernel instead of being materialised per layer.
"""

from __future__ import annotations

import math

import torch
import triton.language as tl
from megatron.core.transformer.attention import SelfAttention

from megatron_infi.kernels._triton import device_kernel, next_power_of_2


def llama3_inv_freq(
    head_dim: int,
    theta: float,
    factor: float = 32.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_max_position_embeddings: int = 8192,
) -> torch.Tensor:
    """Llama 3's scaled inverse frequencies: long wavelengths divided by `factor`, short ones kept,
    a smooth interpolation between (Meta's reference implementation)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = original_max_position_embeddings / low_freq_factor
    high_freq_wavelen = original_max_position_embeddings / high_freq_factor
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_angles(inv_freq: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[seq, 1, 1, head_dim] angles in megatron-core's layout (both halves equal)."""
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=inv_freq.device), inv_freq)
    return torch.cat((freqs, freqs), dim=-1)[:, None, None, :]


def rope_reference(t: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """The definition, in fp32, out of place: t [s, b, h, d], angles [s, 1, 1, d]."""
    tf = t.float()
    angles = angles[: t.shape[0]].float()
    x1, x2 = torch.chunk(tf, 2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (tf * torch.cos(angles) + rotated * torch.sin(angles)).to(t.dtype)


@device_kernel
def _rope_kernel(
    Q_IN,
    Q_OUT,
    K_IN,
    K_OUT,
    ANGLES,
    sq_in_s,
    sq_in_b,
    sq_in_h,
    sq_out_s,
    sq_out_b,
    sq_out_h,
    sk_in_s,
    sk_in_b,
    sk_in_h,
    sk_out_s,
    sk_out_b,
    sk_out_h,
    stride_angles,
    batch,
    n_q_heads,
    n_k_heads,
    sin_sign,
    HALF: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_QH: tl.constexpr,
    BLOCK_KH: tl.constexpr,
):
    pid = tl.program_id(0)
    s = (pid // batch).to(tl.int64)
    b = (pid % batch).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HALF
    angle = tl.load(ANGLES + s * stride_angles + d, mask=d_mask, other=0.0).to(tl.float32)
    cos = tl.cos(angle)[None, :]
    sin = (tl.sin(angle) * sin_sign)[None, :]

    h = tl.arange(0, BLOCK_QH)
    mask = (h < n_q_heads)[:, None] & d_mask[None, :]
    src = Q_IN + s * sq_in_s + b * sq_in_b + h[:, None] * sq_in_h + d[None, :]
    dst = Q_OUT + s * sq_out_s + b * sq_out_b + h[:, None] * sq_out_h + d[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(dst, (x1 * cos - x2 * sin).to(Q_OUT.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, (x2 * cos + x1 * sin).to(Q_OUT.dtype.element_ty), mask=mask)

    h = tl.arange(0, BLOCK_KH)
    mask = (h < n_k_heads)[:, None] & d_mask[None, :]
    src = K_IN + s * sk_in_s + b * sk_in_b + h[:, None] * sk_in_h + d[None, :]
    dst = K_OUT + s * sk_out_s + b * sk_out_b + h[:, None] * sk_out_h + d[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(dst, (x1 * cos - x2 * sin).to(K_OUT.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, (x2 * cos + x1 * sin).to(K_OUT.dtype.element_ty), mask=mask)


def _check(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dim() != 4:
        raise ValueError(f"RoPE expects {name} as [seq, batch, heads, head_dim], got {tuple(t.shape)}")
    return t if t.stride(-1) == 1 else t.contiguous()


def _launch(q_in, q_out, k_in, k_out, angles: torch.Tensor, sin_sign: float) -> None:
    s, b, hq, d = q_in.shape
    hk = k_in.shape[2]
    if d % 2 or angles.shape[-1] != d:
        raise ValueError(f"RoPE angles cover {angles.shape[-1]} dims of head_dim {d} (need all, even)")
    if angles.shape[0] < s:
        raise ValueError(f"RoPE angles cover {angles.shape[0]} positions, sequence has {s}")
    if s * b == 0:
        return
    half = d // 2
    _rope_kernel[(s * b,)](
        q_in, q_out, k_in, k_out, angles,
        q_in.stride(0), q_in.stride(1), q_in.stride(2),
        q_out.stride(0), q_out.stride(1), q_out.stride(2),
        k_in.stride(0), k_in.stride(1), k_in.stride(2),
        k_out.stride(0), k_out.stride(1), k_out.stride(2),
        angles.stride(0), b, hq, hk, sin_sign,
        HALF=half, BLOCK_D=next_power_of_2(half),
        BLOCK_QH=next_power_of_2(hq), BLOCK_KH=next_power_of_2(hk),
        num_warps=4,
    )  # fmt: skip


def _rotatable_in_place(t: torch.Tensor) -> bool:
    """Autograd allows rewriting a tensor that owns its storage and is not a leaf needing grad."""
    return t._base is None and not (t.is_leaf and t.requires_grad)


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, angles: torch.Tensor):
        # Rotate in place where autograd allows it (a tensor that owns its storage); views, such as
        # megatron's key split out of the fused QKV output, get a fresh output instead.
        q_out = q if _rotatable_in_place(q) else torch.empty_like(q, memory_format=torch.contiguous_format)
        k_out = k if _rotatable_in_place(k) else torch.empty_like(k, memory_format=torch.contiguous_format)
        _launch(q, q_out, k, k_out, angles, 1.0)
        dirty = [t for t, out in ((q, q_out), (k, k_out)) if t is out]
        if dirty:
            ctx.mark_dirty(*dirty)
        ctx.save_for_backward(angles)
        return q_out, k_out

    @staticmethod
    def backward(ctx, dq: torch.Tensor, dk: torch.Tensor):
        (angles,) = ctx.saved_tensors
        dq, dk = _check(dq, "dq"), _check(dk, "dk")
        # The transpose of a rotation is the rotation by the negated angle. Fresh outputs: the
        # incoming grads belong to autograd.
        dq_in, dk_in = torch.empty_like(dq), torch.empty_like(dk)
        _launch(dq, dq_in, dk, dk_in, angles, -1.0)
        return dq_in, dk_in, None


def _angle_rows(angles: torch.Tensor) -> torch.Tensor:
    """[seq, 1, 1, d] (megatron) or [seq, d] -> a [seq, d] view with unit last stride."""
    angles = angles.reshape(angles.shape[0], angles.shape[-1])
    return angles if angles.stride(-1) == 1 else angles.contiguous()


def rope_triton(q: torch.Tensor, k: torch.Tensor, angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [s, b, hq, d] and k [s, b, hk, d]; in place unless a tensor is a view. Use the
    returned tensors."""
    return _Rope.apply(_check(q, "q"), _check(k, "k"), _angle_rows(angles).float())


class FusedRopeSelfAttention(SelfAttention):
    """megatron-core SelfAttention whose q/k rotation runs in the fused kernel.

    The rotary embedding is held back from the parent's forward and applied to q and k right after
    they are split from the fused QKV projection, outside the core-attention region that selective
    recompute re-runs (so an in-place rotation is never applied twice). Inference, packed sequences
    and anything else the kernel does not cover take the parent's path unchanged.
    """

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        if config.rotary_interleaved or config.multi_latent_attention:
            raise ValueError("FusedRopeSelfAttention supports non-interleaved RoPE only")
        self._pending_angles = None

    def forward(
        self,
        hidden_states,
        attention_mask,
        key_value_states=None,
        inference_context=None,
        rotary_pos_emb=None,
        *args,
        **kwargs,
    ):
        fused = (
            rotary_pos_emb is not None
            and inference_context is None
            and kwargs.get("inference_params") is None
            and kwargs.get("packed_seq_params") is None
            and self._yarn_concentration_factor == 1.0
        )
        if not fused:
            return super().forward(
                hidden_states,
                attention_mask,
                key_value_states,
                inference_context,
                rotary_pos_emb,
                *args,
                **kwargs,
            )
        if isinstance(rotary_pos_emb, tuple):
            q_emb, k_emb = rotary_pos_emb
            if q_emb is not k_emb:
                raise ValueError("FusedRopeSelfAttention needs the same angles for q and k")
            rotary_pos_emb = q_emb
        self._pending_angles = rotary_pos_emb
        try:
            return super().forward(
                hidden_states, attention_mask, key_value_states, inference_context, None, *args, **kwargs
            )
        finally:
            self._pending_angles = None

    def get_query_key_value_tensors(self, *args, **kwargs):
        qkv = super().get_query_key_value_tensors(*args, **kwargs)
        if self._pending_angles is None:
            return qkv
        query, key, value = qkv
        query, key = rope_triton(query, key, self._pending_angles)
        return query, key, value
