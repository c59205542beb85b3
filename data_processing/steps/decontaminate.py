"""Stage 5 step: drop documents holding a benchmark n-gram, and record which item matched which document.

The index is `megatron_infi.data_processing.decontamination.ngram.NGramIndex` (shared with SFT selection), built in
each task from local benchmark files. Matches go to `<report_dir>/<rank>.jsonl`; the finalize step
merges them into `decontamination_report.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.filters.base_filter import BaseFilter

from megatron_infi.data_processing.decontamination.ngram import (
    DEFAULT_TEXT_FIELDS,
    NGramIndex,
    load_benchmark_items,
)


def build_index(benchmarks: list[dict], n: int) -> NGramIndex:
    """`benchmarks`: [{"path", "name" (optional), "text_fields" (optional)}]."""
    index = NGramIndex(n=n)
    for bench in benchmarks:
        fields = bench.get("text_fields") or DEFAULT_TEXT_FIELDS
        index.add_all(load_benchmark_items(bench["path"], bench.get("name"), text_fields=fields))
    return index


class DecontaminationFilter(BaseFilter):
    name = "🧪 Decontamination (n-gram)"

    def __init__(self, benchmarks: list[dict], n: int, report_folder: DataFolderLike):
        super().__init__()
        self.benchmarks = [dict(b) for b in benchmarks]
        self.n = n
        self.report_folder = get_datafolder(report_folder)
        self._index: NGramIndex | None = None
        self._report = None

    @property
    def index(self) -> NGramIndex:
        if self._index is None:
            self._index = build_index(self.benchmarks, self.n)
        return self._index

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        matches = self.index.matches(doc.text)
        if not matches:
            return True
        record = {
            "document": doc.id,
            "domain": doc.metadata.get("domain"),
            "source": doc.metadata.get("source"),
            "file": doc.metadata.get("file"),
            "line": doc.metadata.get("line"),
            "matches": [asdict(m) for m in matches],
        }
        self._report.write(json.dumps(record, ensure_ascii=False) + "\n")
        for bench in sorted({m.benchmark for m in matches}):
            self.stat_update(f"contaminated_{bench}")
        return False, "benchmark_ngram"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        _ = self.index  # fail at task start on a broken benchmark file, not at the first document
        # one file per task, rewritten from scratch when an interrupted task is rerun
        with self.report_folder.open(f"{rank:05d}.jsonl", "wt") as self._report:
            yield from super().run(data, rank, world_size)
        self._report = None
