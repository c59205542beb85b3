"""Model presets: the single place that fixes each architecture's shape.

They drive the megatron-core model, the HF conversion mappings and the FLOPs/MFU accounting.
A config selects one with `model.preset: <name>` and may override any field next to it.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # Llama-3.2-1B, the InfiR architecture.
    "llama3.2-1b": dict(
        arch="llama",
        num_layers=16,
        hidden_size=2048,
        ffn_hidden_size=8192,
        num_attention_heads=32,
        num_query_groups=8,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling=dict(type="llama3", factor=32.0, original_max_position_embeddings=8192),
        norm_eps=1e-5,
        tie_embeddings=True,
        qkv_bias=False,
    ),
    # Qwen2.5-7B (and Qwen2.5-Math-7B, the InfiAlign base): biases on q/k/v, untied embeddings.
    "qwen2.5-7b": dict(
        arch="qwen2",
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
        qkv_bias=True,
    ),
    # A CPU-sized Llama: GQA (8 heads, 4 groups), 4 layers, so TP=2, PP=2 and TPxPP all divide.
    "tiny": dict(
        arch="llama",
        num_layers=4,
        hidden_size=128,
        ffn_hidden_size=384,
        num_attention_heads=8,
        num_query_groups=4,
        vocab_size=128256,
        max_position_embeddings=4096,
        rope_theta=500000.0,
        rope_scaling=dict(type="llama3", factor=32.0, original_max_position_embeddings=8192),
        norm_eps=1e-5,
        tie_embeddings=True,
        qkv_bias=False,
    ),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)
