"""A tiny random Llama with the real Llama-3 tokenizer, saved as an HF dir (the converter's export
shape): what the generation and evaluation tests run on."""

from __future__ import annotations

from pathlib import Path


def build_tiny_llama(out_dir: Path, tokenizer_dir: Path, seed: int = 0, max_positions: int = 2048) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|eot_id|>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def shared_tiny_llama(base: Path) -> tuple[Path, Path]:
    """(tokenizer dir, model dir) under `base`, built once per test session whichever test dir asks first."""
    from megatron_infi.data.tokenizer import build_llama3_tokenizer

    tokenizer_dir = build_llama3_tokenizer(base / "llama3-tokenizer")
    model_dir = base / "tiny-llama"
    if not (model_dir / "config.json").exists():
        build_tiny_llama(model_dir, tokenizer_dir)
    return tokenizer_dir, model_dir
