"""Mistral (v0.3): Llama's decoder and tensor names, a 32768-token vocab, RoPE theta 1e6 and no
sliding window. MistralForCausalLM on the HF side. Mistral v0.1 / v0.2 configs set
`sliding_window` (4096), which megatron-core's full causal attention here does not implement: they
are refused, naming the field."""

from __future__ import annotations

from megatron_infi.models.architecture import Architecture
from megatron_infi.models.hf_mapping import (
    HFMapping,
    common_fields,
    common_hf_kwargs,
    full_attention_only,
    rope_fields,
)
from megatron_infi.models.llama import RULES


def model_fields_from_hf(c) -> dict:
    full_attention_only(c, "sliding_window")
    return dict(arch="mistral", **common_fields(c), **rope_fields(c, ("default",)))


def hf_config_from_model(model, token_ids: dict):
    from transformers import MistralConfig

    config = MistralConfig(**common_hf_kwargs(model, token_ids), sliding_window=None)
    config.architectures = ["MistralForCausalLM"]
    return config


ARCHITECTURE = Architecture(
    name="mistral",
    presets={
        "mistral-7b-v0.3": dict(
            num_layers=32,
            hidden_size=4096,
            ffn_hidden_size=14336,
            num_attention_heads=32,
            num_query_groups=8,
            vocab_size=32768,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            rope_scaling=dict(type="none"),
            norm_eps=1e-5,
            tie_embeddings=False,
        ),
    },
    hf=HFMapping(
        model_type="mistral",
        hf_architecture="MistralForCausalLM",
        rules=RULES,
        model_fields_from_hf=model_fields_from_hf,
        hf_config_from_model=hf_config_from_model,
    ),
)
