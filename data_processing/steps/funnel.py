"""Counts documents, characters and tokens per domain at a point of the pipeline (the report's funnel).

Token counts are exact: a document is tokenized once and its count cached in metadata, and re-counted
only if a filter changed its text since (C4 trims lines). Each task writes `<folder>/<rank>.json`.
"""

from __future__ import annotations

import json
from collections import defaultdict

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.utils.batching import batched
from datatrove.utils.tokenization import PipelineStepWithTokenizer


class FunnelCounter(PipelineStepWithTokenizer):
    type = "📊 - STATS"

    def __init__(
        self,
        stage: str,
        output_folder: DataFolderLike,
        tokenizer_path: str | None = None,
        batch_size: int = 1000,
    ):
        self.name = f"funnel after {stage}"
        super().__init__(tokenizer_path)
        self.stage = stage
        self.output_folder = get_datafolder(output_folder)
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        counts: dict[str, dict[str, int]] = defaultdict(lambda: {"documents": 0, "chars": 0, "tokens": 0})
        for batch in batched(data or [], self.batch_size):
            if self.tokenizer_name_or_path:
                stale = [d for d in batch if d.metadata.get("token_count_chars") != len(d.text)]
                if stale:
                    with self.track_time(unit="batch"):
                        encoded = self.tokenizer.encode_batch(
                            [d.text for d in stale], add_special_tokens=False
                        )
                    for doc, encoding in zip(stale, encoded, strict=True):
                        doc.metadata["token_count"] = len(encoding.ids)
                        doc.metadata["token_count_chars"] = len(doc.text)
            for doc in batch:
                row = counts[doc.metadata.get("domain", "unknown")]
                row["documents"] += 1
                row["chars"] += len(doc.text)
                row["tokens"] += doc.metadata.get("token_count", 0)
            yield from batch
        with self.output_folder.open(f"{rank:05d}.json", "wt") as handle:
            json.dump({"stage": self.stage, "rank": rank, "domains": dict(counts)}, handle)


BY_SOURCE = "source:"  # stat key prefix: `source:<name>:<reason>` counts a step's drops per source


class DropsBySource:
    """Counts a filter's drops per source and reason in the filter's own stats.

    datatrove filters hand every dropped document (with `filter_reason` set) to their exclusion
    writer; this stands in for one, so that the manifest can say which source lost what where."""

    def __init__(self, step, default_reason: str = "unspecified"):
        self.step = step
        self.default_reason = default_reason

    def __enter__(self) -> DropsBySource:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def write(self, doc: Document, rank: int = 0) -> None:
        reason = doc.metadata.get("filter_reason") or self.default_reason
        self.step.stat_update(f"{BY_SOURCE}{doc.metadata.get('source', 'unknown')}:{reason}")
