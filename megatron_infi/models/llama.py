"""Llama (Llama-3.x, the InfiR architecture): LlamaForCausalLM <-> megatron-core GPTModel."""

from __future__ import annotations

from megatron_infi.checkpoints_tools.mappings.base import (
    ArchMapping,
    Rule,
    common_fields,
    common_hf_kwargs,
    require,
    rope_fields,
)

LAYER = "model.layers.{layer}."

RULES = (
    Rule("embedding.word_embeddings.weight", "vocab", ("model.embed_tokens.weight",)),
    Rule(
        "decoder.layers.self_attention.linear_qkv.layer_norm_weight",
        "copy",
        (LAYER + "input_layernorm.weight",),
    ),
    Rule(
        "decoder.layers.self_attention.linear_qkv.weight",
        "qkv",
        (
            LAYER + "self_attn.q_proj.weight",
            LAYER + "self_attn.k_proj.weight",
            LAYER + "self_attn.v_proj.weight",
        ),
    ),
    Rule("decoder.layers.self_attention.linear_proj.weight", "copy", (LAYER + "self_attn.o_proj.weight",)),
    Rule(
        "decoder.layers.mlp.linear_fc1.layer_norm_weight",
        "copy",
        (LAYER + "post_attention_layernorm.weight",),
    ),
    Rule(
        "decoder.layers.mlp.linear_fc1.weight",
        "gate_up",
        (LAYER + "mlp.gate_proj.weight", LAYER + "mlp.up_proj.weight"),
    ),
    Rule("decoder.layers.mlp.linear_fc2.weight", "copy", (LAYER + "mlp.down_proj.weight",)),
    Rule("decoder.final_layernorm.weight", "copy", ("model.norm.weight",)),
    Rule("output_layer.weight", "vocab", ("lm_head.weight",), when="untied"),
)


def model_fields_from_hf(c) -> dict:
    # Llama's attention_bias adds biases to q, k, v AND o; megatron-core's layer has qkv biases only.
    require(
        not getattr(c, "attention_bias", False), "attention_bias", "biases on attention are not supported"
    )
    require(not getattr(c, "mlp_bias", False), "mlp_bias", "biases on the MLP are not supported")
    return dict(arch="llama", qkv_bias=False, **common_fields(c), **rope_fields(c, ("default", "llama3")))


def hf_config_from_model(model, token_ids: dict):
    from transformers import LlamaConfig

    config = LlamaConfig(
        **common_hf_kwargs(model, token_ids), head_dim=model.head_dim, attention_bias=False, mlp_bias=False
    )
    config.architectures = ["LlamaForCausalLM"]
    return config


MAPPING = ArchMapping(
    arch="llama",
    model_type="llama",
    hf_architecture="LlamaForCausalLM",
    rules=RULES,
    model_fields_from_hf=model_fields_from_hf,
    hf_config_from_model=hf_config_from_model,
)
