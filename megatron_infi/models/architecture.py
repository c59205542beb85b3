"""What an architecture is: the facts one module per architecture declares (`models/<arch>.py`).

Every registered architecture is a Llama-family decoder: pre-norm RMSNorm, rotary position
embeddings, grouped-query self-attention with one fused QKV projection, a SwiGLU MLP and no biases
on the linear layers. An architecture names what differs from that (biases on q/k/v, an RMSNorm
over each head's queries and keys), its presets (named shapes) and its Hugging Face mapping.
models/gpt.py turns these facts into the TransformerConfig, models/spec.py into the layer spec;
neither branches on architecture names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from megatron_infi.models.hf_mapping import HFMapping


@dataclass(frozen=True)
class Architecture:
    # `model.arch` in configs.
    name: str
    # Preset name -> ModelConfig fields (`model.preset: <name>`); `arch` is filled in by the registry.
    presets: dict[str, dict]
    hf: HFMapping
    # Biases on the q, k and v projections (not on the output projection): Qwen2.
    qkv_bias: bool = False
    # RMSNorm over each head's queries and keys, after the projection and before RoPE: Qwen3.
    qk_norm: bool = False

    def transformer_config_fields(self, model) -> dict:
        """The TransformerConfig fields the architecture fixes, for a ModelConfig of it."""
        return dict(
            normalization="RMSNorm",
            layernorm_epsilon=model.norm_eps,
            gated_linear_unit=True,
            activation_func=F.silu,
            add_bias_linear=False,
            add_qkv_bias=self.qkv_bias,
            qk_layernorm=self.qk_norm,
            # Per-head width; megatron-core sizes q/k/v and the output projection by it, so it
            # need not be hidden_size / num_attention_heads (Qwen3).
            kv_channels=model.head_dim,
        )
