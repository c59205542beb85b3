"""Qwen2 / Qwen2.5 (the InfiAlign base): Qwen2ForCausalLM <-> megatron-core GPTModel.

Differs from Llama by biases on the q/k/v projections (megatron-core: `linear_qkv.bias`, fused in
the same grouped layout as the weight) and by usually untied embeddings.
"""

from __future__ import annotations

from megatron_infi.checkpoints_tools.mappings.base import (
    ArchMapping,
    Rule,
    common_fields,
    common_hf_kwargs,
    require,
    rope_fields,
)
from megatron_infi.checkpoints_tools.mappings.llama import LAYER
from megatron_infi.checkpoints_tools.mappings.llama import RULES as LLAMA_RULES

QKV_BIAS = Rule(
    "decoder.layers.self_attention.linear_qkv.bias",
    "qkv",
    (LAYER + "self_attn.q_proj.bias", LAYER + "self_attn.k_proj.bias", LAYER + "self_attn.v_proj.bias"),
)
RULES = (*LLAMA_RULES[:3], QKV_BIAS, *LLAMA_RULES[3:])


def model_fields_from_hf(c) -> dict:
    require(
        not getattr(c, "use_sliding_window", False),
        "use_sliding_window",
        "sliding-window attention is not supported",
    )
    layer_types = set(getattr(c, "layer_types", None) or ["full_attention"])
    require(layer_types == {"full_attention"}, "layer_types", f"{sorted(layer_types)}: only full attention")
    return dict(arch="qwen2", qkv_bias=True, **common_fields(c), **rope_fields(c, ("default",)))


def hf_config_from_model(model, token_ids: dict):
    from transformers import Qwen2Config

    config = Qwen2Config(**common_hf_kwargs(model, token_ids), use_sliding_window=False)
    config.architectures = ["Qwen2ForCausalLM"]
    return config


MAPPING = ArchMapping(
    arch="qwen2",
    model_type="qwen2",
    hf_architecture="Qwen2ForCausalLM",
    rules=RULES,
    model_fields_from_hf=model_fields_from_hf,
    hf_config_from_model=hf_config_from_model,
)
