"""Fixtures for post-training tests: the real Llama-3 tokenizer (built once, kept in pytest's cache dir),
a tiny random Llama built on it, and real maths data (GSM-Symbolic, CHAMP) in the SFT contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from megatron_infi.demo import reference_data


def build_tiny_llama(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Random LlamaForCausalLM (hidden 64, 2 layers, 4 heads, 2 KV heads) + tokenizer, as an HF dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def llama3_tokenizer_dir(request, tmp_path_factory) -> Path:
    from megatron_infi.data.tokenizer import build_llama3_tokenizer

    # Conversion takes ~10 s; the builder reuses a dir whose source hash matches, so keep it in
    # pytest's cache dir across runs when the cache is enabled.
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("llama3-tokenizer")) if cache else tmp_path_factory.mktemp("llama3-tokenizer")
    return build_llama3_tokenizer(root / "hf")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, llama3_tokenizer_dir) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model", llama3_tokenizer_dir)


@pytest.fixture(scope="session")
def sft_data(tmp_path_factory) -> dict[str, Path]:
    """Phase 1: GSM-Symbolic (foundational); phase 2: CHAMP competition maths (advanced)."""
    root = tmp_path_factory.mktemp("sft-data")
    gsm = reference_data.sft_records(reference_data.gsm_symbolic(24, seed=1), "gsm_symbolic")
    champ = reference_data.sft_records(reference_data.champ()[:24], "champ")
    return {
        "phase1": reference_data.write_jsonl(root / "gsm_symbolic.jsonl", gsm),
        "phase2": reference_data.write_jsonl(root / "champ.jsonl", champ),
    }
