"""Token-level n-gram decontamination index, shared by the pretraining pipeline (n = 10) and SFT
selection (n = 15).

Text is normalised (NFKC, lower case, words = runs of letters/digits) so that a benchmark item
changed only in case, whitespace or punctuation still matches. N-grams are stored as 64-bit hashes:
a benchmark suite of a few thousand items is a few MB, and a document is checked in one pass.
"""

from __future__ import annotations

import gzip
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from megatron_infi.errors import DataError

_WORD = re.compile(r"\w+", re.UNICODE)

# Field names tried, in order, for the text of a benchmark item (question/answer JSONL, HumanEval,
# MBPP, MMLU-style, GPQA-style).
DEFAULT_TEXT_FIELDS = (
    "question",
    "problem",
    "prompt",
    "text",
    "input",
    "answer",
    "solution",
    "canonical_solution",
)


def normalize_words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def ngram_hashes(words: list[str], n: int) -> Iterator[tuple[int, int]]:
    """(hash, start word index) for every n-gram; texts shorter than n give one hash of all words."""
    if not words:
        return
    if len(words) < n:
        yield xxhash.xxh3_64_intdigest(" ".join(words).encode()), 0
        return
    for start in range(len(words) - n + 1):
        yield xxhash.xxh3_64_intdigest(" ".join(words[start : start + n]).encode()), start


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str
    item_id: str
    text: str


@dataclass(frozen=True)
class Match:
    benchmark: str
    item_id: str
    ngram: str


@dataclass
class NGramIndex:
    n: int = 10
    # hash -> (benchmark, item_id, ngram text) of the first item that produced it
    _table: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    items: int = 0

    def add(self, item: BenchmarkItem) -> None:
        words = normalize_words(item.text)
        for digest, start in ngram_hashes(words, self.n):
            self._table.setdefault(
                digest, (item.benchmark, item.item_id, " ".join(words[start : start + self.n]))
            )
        self.items += 1

    def add_all(self, items: Iterable[BenchmarkItem]) -> NGramIndex:
        for item in items:
            self.add(item)
        return self

    def __len__(self) -> int:
        return len(self._table)

    def matches(self, text: str, first_only: bool = False) -> list[Match]:
        """Benchmark n-grams found in `text` (one Match per distinct benchmark item)."""
        found: dict[tuple[str, str], Match] = {}
        words = normalize_words(text)
        if len(words) < self.n:
            return []  # a document shorter than n words cannot hold a benchmark n-gram
        for digest, _ in ngram_hashes(words, self.n):
            hit = self._table.get(digest)
            if hit is not None and (hit[0], hit[1]) not in found:
                found[(hit[0], hit[1])] = Match(*hit)
                if first_only:
                    break
        return list(found.values())

    def is_contaminated(self, text: str) -> bool:
        return bool(self.matches(text, first_only=True))


def load_benchmark_items(
    path: str | Path, benchmark: str | None = None, text_fields: Iterable[str] = DEFAULT_TEXT_FIELDS
) -> list[BenchmarkItem]:
    """Items of a local benchmark file (.jsonl or .jsonl.gz). Each present text field becomes its own
    item text (question and answer are matched separately, so either leaking is caught)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"benchmark file not found: {path}")
    name = benchmark or path.name.split(".")[0]
    opener = gzip.open if path.suffix == ".gz" else open
    items: list[BenchmarkItem] = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            item_id = str(record.get("task_id", record.get("id", lineno)))
            for key in text_fields:
                value = record.get(key)
                if isinstance(value, str) and value.strip():
                    items.append(BenchmarkItem(name, f"{item_id}", value))
    return items
