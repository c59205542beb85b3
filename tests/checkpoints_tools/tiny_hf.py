"""Tiny random Hugging Face models with awkward shapes, built locally with transformers' own classes:
6 query heads over 2 KV groups (a ratio of 3), a 1000-token vocab (not a multiple of 128, so
megatron-core pads it), one model per registered architecture: Llama tied, Qwen2 untied with q/k/v
biases, Qwen3 with q/k norms and a head_dim of 32 (heads x head_dim = 192 over a 96-wide residual),
Mistral untied. Norm weights and biases are random too, so a tensor mapped to the wrong place cannot
go unnoticed."""

from __future__ import annotations

from pathlib import Path

import torch

SHAPES = dict(
    vocab_size=1000,
    hidden_size=96,
    intermediate_size=160,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=16384,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 1000000.0}
# arch -> (transformers config class, HF class name, fields on top of SHAPES).
ARCHS = {
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {"tie_word_embeddings": True, "rope_parameters": LLAMA3_ROPE},
    ),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"tie_word_embeddings": False, "rope_parameters": DEFAULT_ROPE},
    ),
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        {"tie_word_embeddings": True, "rope_parameters": DEFAULT_ROPE, "head_dim": 32},
    ),
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        {"tie_word_embeddings": False, "rope_parameters": DEFAULT_ROPE, "sliding_window": None},
    ),
}


def hf_config(arch: str, **overrides):
    import transformers

    config_class, hf_class, fields = ARCHS[arch]
    config = getattr(transformers, config_class)(**{**SHAPES, **fields, **overrides})
    config.architectures = [hf_class]
    return config


def head_dim(arch: str) -> int:
    config = hf_config(arch)
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def write_tiny_hf(
    out_dir: Path, arch: str, *, seed: int = 0, dtype=torch.float32, max_shard_size: str = "1GB", **overrides
) -> Path:
    """Save a random `arch` model to `out_dir` (safetensors; several shards when max_shard_size is small)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(arch, **overrides), dtype=dtype)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.1)
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    return Path(out_dir)


def read_safetensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(Path(hf_dir).glob("*.safetensors")):
        tensors |= load_file(path)
    return tensors


def assert_bit_identical(a_dir: Path, b_dir: Path) -> int:
    """Every tensor of two HF dirs has the same name, dtype, shape and bits; returns the count."""
    a, b = read_safetensors(a_dir), read_safetensors(b_dir)
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    for name in a:
        assert a[name].dtype == b[name].dtype, (name, a[name].dtype, b[name].dtype)
        assert a[name].shape == b[name].shape, (name, a[name].shape, b[name].shape)
        assert torch.equal(a[name].view(torch.uint8), b[name].view(torch.uint8)), name
    return len(a)
