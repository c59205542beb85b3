"""Decontamination of SFT records against local benchmark files (InfiAlign step 5): an n-gram
(n = 15) shared between a benchmark item and any turn of the conversation, or cosine similarity of
the prompt's embedding with a benchmark question above a threshold (0.9). Every removal names the
benchmark item that caused it, so the report can list contamination per item.

The benchmark questions are embedded once per run (cached as .npy beside the work dir) and the
cache is loaded by each task; the n-gram index is cheap and rebuilt per task.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from megatron_infi.data_processing.decontamination.embedding import (
    EmbeddingIndex,
    SentenceEncoder,
    load_question_items,
)
from megatron_infi.data_processing.decontamination.ngram import (
    BenchmarkItem,
    NGramIndex,
    load_benchmark_items,
)
from megatron_infi.data_processing.sft.records import full_text
from megatron_infi.utils import atomic_write_bytes


@dataclass
class BenchmarkSet:
    ngram: NGramIndex | None
    embedding: EmbeddingIndex | None
    sizes: dict[str, int] = field(default_factory=dict)  # benchmark -> items

    @classmethod
    def build(
        cls,
        paths: list[str],
        ngram: int,
        threshold: float | None,
        encoder: SentenceEncoder | None,
        cache: str | Path | None = None,
    ) -> BenchmarkSet:
        """N-gram index (cheap: rebuilt per task) + question embeddings (cached in `cache`.npy)."""
        ngram_index = NGramIndex(n=ngram) if ngram else None
        questions: list[BenchmarkItem] = []
        sizes: Counter[str] = Counter()
        for path in paths:
            items = load_benchmark_items(path)
            if items:
                sizes[items[0].benchmark] += len({i.item_id for i in items})
            if ngram_index is not None:
                ngram_index.add_all(items)
            questions.extend(load_question_items(path))
        embedding = None
        if threshold is not None and questions:
            cached = Path(f"{cache}.npy") if cache else None
            if cached is not None and cached.is_file():
                vectors = np.load(cached)
                if len(vectors) != len(questions):
                    raise ValueError(
                        f"{cached}: {len(vectors)} rows for {len(questions)} benchmark questions"
                    )
                embedding = EmbeddingIndex(threshold=threshold, items=questions, vectors=vectors)
            else:
                if encoder is None:
                    raise ValueError("embedding decontamination needs a sentence encoder")
                embedding = EmbeddingIndex.build(questions, encoder, threshold)
                if cached is not None:
                    atomic_write_bytes(cached, _npy_bytes(embedding.vectors))
        return cls(ngram_index, embedding, dict(sizes))

    def check(self, records: list[dict[str, Any]], prompt_vectors: np.ndarray | None) -> list[dict | None]:
        """Per record: None if clean, else {method, benchmark, item_id, evidence}."""
        found: list[dict | None] = [None] * len(records)
        if self.ngram is not None:
            for i, record in enumerate(records):
                hits = self.ngram.matches(full_text(record), first_only=True)
                if hits:
                    hit = hits[0]
                    found[i] = {
                        "method": "ngram",
                        "benchmark": hit.benchmark,
                        "item_id": hit.item_id,
                        "evidence": hit.ngram,
                    }
        if self.embedding is not None and prompt_vectors is not None and len(records):
            for i, match in enumerate(self.embedding.search(prompt_vectors)):
                if match is not None and found[i] is None:
                    found[i] = {
                        "method": "embedding",
                        "benchmark": match.benchmark,
                        "item_id": match.item_id,
                        "evidence": f"cosine {match.score:.3f}",
                    }
        return found


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
