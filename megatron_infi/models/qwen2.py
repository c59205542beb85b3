"""Qwen2 / Qwen2.5 (the InfiAlign base): Llama's decoder with biases on the q/k/v projections
(megatron-core: `linear_qkv.bias`, fused in the same grouped layout as the weight) and, in the
larger models, untied embeddings. Qwen2ForCausalLM on the HF side."""

from __future__ import annotations

from megatron_infi.models.architecture import Architecture
from megatron_infi.models.hf_mapping import (
    HFMapping,
    Rule,
    common_fields,
    common_hf_kwargs,
    full_attention_only,
    rope_fields,
)
from megatron_infi.models.llama import LAYER
from megatron_infi.models.llama import RULES as LLAMA_RULES

QKV_BIAS = Rule(
    "decoder.layers.self_attention.linear_qkv.bias",
    "qkv",
    (LAYER + "self_attn.q_proj.bias", LAYER + "self_attn.k_proj.bias", LAYER + "self_attn.v_proj.bias"),
)
RULES = (*LLAMA_RULES[:3], QKV_BIAS, *LLAMA_RULES[3:])


def model_fields_from_hf(c) -> dict:
    full_attention_only(c, "use_sliding_window")
    return dict(arch="qwen2", **common_fields(c), **rope_fields(c, ("default",)))


def hf_config_from_model(model, token_ids: dict):
    from transformers import Qwen2Config

    config = Qwen2Config(**common_hf_kwargs(model, token_ids), use_sliding_window=False)
    config.architectures = ["Qwen2ForCausalLM"]
    return config


ARCHITECTURE = Architecture(
    name="qwen2",
    presets={
        # Qwen2.5-7B (and Qwen2.5-Math-7B, the InfiAlign base).
        "qwen2.5-7b": dict(
            num_layers=28,
            hidden_size=3584,
            ffn_hidden_size=18944,
            num_attention_heads=28,
            num_query_groups=4,
            vocab_size=152064,
            max_position_embeddings=131072,
            rope_theta=1000000.0,
            rope_scaling=dict(type="none"),
            norm_eps=1e-6,
            tie_embeddings=False,
        ),
    },
    hf=HFMapping(
        model_type="qwen2",
        hf_architecture="Qwen2ForCausalLM",
        rules=RULES,
        model_fields_from_hf=model_fields_from_hf,
        hf_config_from_model=hf_config_from_model,
    ),
    qkv_bias=True,
)
