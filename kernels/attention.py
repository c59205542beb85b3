"""Core attention for megatron-core layer specs: Transformer Engine, then flash-attn, then torch SDPA.

megatron-core's stock local `DotProductAttention` materialises the full [b, heads, s, s] score
matrix (and repeats K/V for GQA); at seq 2048 x micro-batch 4 on the 1B shape that ran out of
memory on an 80 GB H100. `SDPAttention` keeps the same module interface and calls
`torch.nn.functional.scaled_dot_product_attention`, which picks flash / memory-efficient kernels on
GPU and a fused math kernel on CPU, with GQA handled natively (`enable_gqa`, no repeat_interleave).
`FlashAttention` calls flash-attn's kernel directly ([b, s, h, d] layout, GQA native).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide


class SDPAttention(MegatronModule):
    """Drop-in `core_attention` for megatron-core's SelfAttention (same constructor and forward).

    Inputs are megatron's [seq, batch, heads, head_dim]; output is [seq, batch, heads * head_dim].
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPAttention does not support context parallelism (use Transformer Engine)")
        tp_size = config.tensor_model_parallel_size
        self.heads_per_partition = divide(config.num_attention_heads, tp_size)
        self.groups_per_partition = divide(config.num_query_groups or config.num_attention_heads, tp_size)
        self.attn_mask_type = attn_mask_type
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = (
            softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(config.kv_channels)
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        if packed_seq_params is not None:
            raise NotImplementedError("packed sequences need Transformer Engine attention")
        mask_type = attn_mask_type or self.attn_mask_type
        causal = mask_type == AttnMaskType.causal
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        mask = None
        if attention_bias is not None:
            mask = attention_bias
        elif attention_mask is not None and not causal:
            # megatron masks are True where attention is NOT allowed; SDPA wants True where allowed.
            mask = ~attention_mask
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
            is_causal=causal and mask is None,
            scale=self.softmax_scale,
            enable_gqa=self.heads_per_partition != self.groups_per_partition,
        )
        # [b, h, s, d] -> [s, b, h * d]
        s, b = out.shape[2], out.shape[0]
        return out.permute(2, 0, 1, 3).reshape(s, b, -1)


class FlashAttention(SDPAttention):
    """`core_attention` on flash-attn's `flash_attn_func` (causal, no arbitrary masks)."""

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        from flash_attn import flash_attn_func

        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("FlashAttention here covers dense causal / full attention only")
        mask_type = attn_mask_type or self.attn_mask_type
        causal = mask_type == AttnMaskType.causal
        if not causal and attention_mask is not None:
            raise NotImplementedError("FlashAttention cannot apply an arbitrary attention mask (use sdpa)")
        # [s, b, h, d] -> [b, s, h, d]
        q, k, v = (t.transpose(0, 1) for t in (query, key, value))
        out = flash_attn_func(
            q,
            k,
            v,
            dropout_p=self.dropout_p if self.training else 0.0,
            softmax_scale=self.softmax_scale,
            causal=causal,
        )
        s, b = out.shape[1], out.shape[0]
        return out.transpose(0, 1).reshape(s, b, -1)


def transformer_engine_available() -> bool:
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


ATTENTION_BACKENDS = ("te", "flash", "sdpa")


def resolve_attention(backend: str = "auto") -> str:
    """'auto' -> the fastest installed: Transformer Engine, then flash-attn, then torch SDPA."""
    if backend == "auto":
        if transformer_engine_available():
            return "te"
        return "flash" if flash_attn_available() else "sdpa"
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(
            f"unknown attention backend {backend!r} (expected auto, {', '.join(ATTENTION_BACKENDS)})"
        )
    if backend == "te" and not transformer_engine_available():
        raise ValueError("attention=te but Transformer Engine is not installed or CUDA is unavailable")
    if backend == "flash" and not flash_attn_available():
        raise ValueError("attention=flash but flash-attn is not installed or CUDA is unavailable")
    return backend


def select_core_attention(backend: str = "auto") -> type:
    """Module class for megatron-core's `core_attention` slot."""
    backend = resolve_attention(backend)
    if backend == "te":
        from megatron.core.extensions.transformer_engine import TEDotProductAttention

        return TEDotProductAttention
    return FlashAttention if backend == "flash" else SDPAttention
