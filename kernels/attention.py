"""Core attention for megatron-core layer specs: Transformer Engine when installed, else torch SDPA.

megatron-core's stock local `DotProductAttention` materialises the full [b, heads, s, s] score
matrix (and repeats K/V for GQA); at seq 2048 x micro-batch 4 on the 1B shape that ran out of
memory on an 80 GB H100. `SDPAttention` keeps the same module interface and calls
`torch.nn.functional.scaled_dot_product_attention`, which picks flash / memory-efficient kernels on
GPU and a fused math kernel on CPU, with GQA handled natively (`enable_gqa`, no repeat_interleave).
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


def transformer_engine_available() -> bool:
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def select_core_attention(backend: str = "auto") -> type:
    """Module class for `core_attention`: 'te' (Transformer Engine) or 'sdpa'; 'auto' prefers TE."""
    if backend == "auto":
        backend = "te" if transformer_engine_available() else "sdpa"
    if backend == "te":
        from megatron.core.extensions.transformer_engine import TEDotProductAttention

        return TEDotProductAttention
    if backend == "sdpa":
        return SDPAttention
    raise ValueError(f"unknown attention backend {backend!r} (expected auto, te or sdpa)")
