"""Qwen3 (dense): Llama's decoder with an RMSNorm over each head's queries and keys (after the
projection, before RoPE; one weight of head_dim per layer for q and one for k, shared by all heads),
a head_dim of its own (128, whatever hidden_size / num_attention_heads is) and no q/k/v biases.
Qwen3ForCausalLM on the HF side."""

from __future__ import annotations

from megatron_infi.models.architecture import Architecture
from megatron_infi.models.hf_mapping import (
    HFMapping,
    Rule,
    common_fields,
    common_hf_kwargs,
    full_attention_only,
    require,
    rope_fields,
)
from megatron_infi.models.llama import LAYER
from megatron_infi.models.llama import RULES as LLAMA_RULES

QK_NORM = (
    Rule("decoder.layers.self_attention.q_layernorm.weight", "copy", (LAYER + "self_attn.q_norm.weight",)),
    Rule("decoder.layers.self_attention.k_layernorm.weight", "copy", (LAYER + "self_attn.k_norm.weight",)),
)
RULES = (*LLAMA_RULES[:3], *QK_NORM, *LLAMA_RULES[3:])


def model_fields_from_hf(c) -> dict:
    # Qwen3's attention_bias adds biases to q, k, v AND o; megatron-core's layer has qkv biases only.
    require(
        not getattr(c, "attention_bias", False), "attention_bias", "biases on attention are not supported"
    )
    full_attention_only(c, "use_sliding_window")
    return dict(arch="qwen3", **common_fields(c), **rope_fields(c, ("default",)))


def hf_config_from_model(model, token_ids: dict):
    from transformers import Qwen3Config

    config = Qwen3Config(**common_hf_kwargs(model, token_ids), attention_bias=False, use_sliding_window=False)
    config.architectures = ["Qwen3ForCausalLM"]
    return config


QWEN3 = dict(
    head_dim=128,
    vocab_size=151936,
    max_position_embeddings=40960,
    rope_theta=1000000.0,
    rope_scaling=dict(type="none"),
    norm_eps=1e-6,
)

ARCHITECTURE = Architecture(
    name="qwen3",
    presets={
        # Qwen3-0.6B: 16 heads x head_dim 128 = 2048 query channels over a 1024-wide residual.
        "qwen3-0.6b": dict(
            num_layers=28,
            hidden_size=1024,
            ffn_hidden_size=3072,
            num_attention_heads=16,
            num_query_groups=8,
            tie_embeddings=True,
            **QWEN3,
        ),
        "qwen3-8b": dict(
            num_layers=36,
            hidden_size=4096,
            ffn_hidden_size=12288,
            num_attention_heads=32,
            num_query_groups=8,
            tie_embeddings=False,
            **QWEN3,
        ),
    },
    hf=HFMapping(
        model_type="qwen3",
        hf_architecture="Qwen3ForCausalLM",
        rules=RULES,
        model_fields_from_hf=model_fields_from_hf,
        hf_config_from_model=hf_config_from_model,
    ),
    qk_norm=True,
)
