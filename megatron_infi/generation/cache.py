"""A resumable generation cache: one JSONL file per model, one line per (input, sampling, sample index).

Appends are one `write` per batch followed by fsync, so a crash loses at most the batch in flight; a
line cut off by a crash is skipped (and counted) on the next load, and the file is re-terminated
before new appends so the cut line never swallows a good one. Several processes may share a file:
appends hold an exclusive `flock`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from megatron_infi.utils import SkipCounter, read_jsonl


def cache_key(model_id: str, kind: str, item: Any, sampling: dict, sample_index: int) -> str:
    payload = json.dumps(
        {"model": model_id, "kind": kind, "input": item, "sampling": sampling, "sample": sample_index},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class GenerationCache:
    def __init__(self, cache_dir: str | Path, model_id: str):
        self.path = Path(cache_dir) / f"{hashlib.sha256(model_id.encode()).hexdigest()[:20]}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.skipped = SkipCounter()
        self._entries: dict[str, str] = {}
        if self.path.exists():
            for record in read_jsonl(self.path, self.skipped):
                if isinstance(record.get("key"), str) and isinstance(record.get("text"), str):
                    self._entries[record["key"]] = record["text"]
                else:
                    self.skipped.skip("missing-key-or-text", str(self.path))
        meta = self.path.with_suffix(".model.txt")
        if not meta.exists():
            meta.write_text(model_id + "\n")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        return self._entries.get(key)

    def put_many(self, pairs: list[tuple[str, str]]) -> None:
        if not pairs:
            return
        data = "".join(
            json.dumps({"key": k, "text": t}, ensure_ascii=False) + "\n" for k, t in pairs
        ).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as handle:
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":
                        data = b"\n" + data  # isolate a line a crash cut off
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._entries.update(pairs)
