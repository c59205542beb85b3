"""Llama (Llama-3.x, the InfiR architecture): the reference decoder, LlamaForCausalLM on the HF side."""

from __future__ import annotations

from megatron_infi.models.architecture import Architecture
from megatron_infi.models.hf_mapping import (
    HFMapping,
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
    return dict(arch="llama", **common_fields(c), **rope_fields(c, ("default", "llama3")))


def hf_config_from_model(model, token_ids: dict):
    from transformers import LlamaConfig

    config = LlamaConfig(**common_hf_kwargs(model, token_ids), attention_bias=False, mlp_bias=False)
    config.architectures = ["LlamaForCausalLM"]
    return config


LLAMA3_ROPE = dict(type="llama3", factor=32.0, original_max_position_embeddings=8192)

ARCHITECTURE = Architecture(
    name="llama",
    presets={
        # Llama-3.2-1B, the InfiR architecture.
        "llama3.2-1b": dict(
            num_layers=16,
            hidden_size=2048,
            ffn_hidden_size=8192,
            num_attention_heads=32,
            num_query_groups=8,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            rope_scaling=LLAMA3_ROPE,
            norm_eps=1e-5,
            tie_embeddings=True,
        ),
        # A CPU-sized Llama: GQA (8 heads, 4 groups), 4 layers, so TP=2, PP=2 and TPxPP all divide.
        "tiny": dict(
            num_layers=4,
            hidden_size=128,
            ffn_hidden_size=384,
            num_attention_heads=8,
            num_query_groups=4,
            vocab_size=128256,
            max_position_embeddings=4096,
            rope_theta=500000.0,
            rope_scaling=LLAMA3_ROPE,
            norm_eps=1e-5,
            tie_embeddings=True,
        ),
    },
    hf=HFMapping(
        model_type="llama",
        hf_architecture="LlamaForCausalLM",
        rules=RULES,
        model_fields_from_hf=model_fields_from_hf,
        hf_config_from_model=hf_config_from_model,
    ),
)
