"""Source readers: JSONL / parquet / HF-datasets-on-disk -> datatrove Documents tagged with their domain.

A bad record never stops a run: malformed JSON, non-UTF-8 bytes, a lone UTF-16 surrogate (`"\\ud800"`,
valid JSON but not encodable), a missing or non-string text field, empty or oversized text are counted
(`quarantined_<reason>` in the step stats) and written with their file and line to
`<quarantine_dir>/<source>/<rank>.jsonl`. A truncated or corrupt compressed file keeps the records
before the damage; the rest of it is one quarantine entry. A leading UTF-8 BOM is ignored.
A source with `render="chat"` holds SFT conversations, each rendered to one document (render_chat).
"""

from __future__ import annotations

import glob
import json
import lzma
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.pipeline.readers.huggingface import HuggingFaceDatasetReader

METADATA_FIELDS = ("language", "path", "url", "title")
_EXCERPT = 200
_SURROGATE = re.compile("[\ud800-\udfff]")
# what a damaged gzip / bz2 / xz / zstd stream raises while being read
_DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, lzma.LZMAError)
try:
    import zstandard

    _DECOMPRESSION_ERRORS += (zstandard.ZstdError,)
except ImportError:  # zstd input needs zstandard anyway
    pass


def exact_glob(name: str) -> str:
    """A glob that matches only the file `name`. datatrove prefixes `*` to a pattern without wildcards
    (`boolq.jsonl` would also read `my_boolq.jsonl`), so the first character goes into brackets."""
    escaped = glob.escape(name)
    return escaped if glob.has_magic(escaped) else f"[{escaped[0]}]{escaped[1:]}"


def _field_map(metadata_fields: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """Record field -> metadata key (a plain list keeps the names)."""
    if isinstance(metadata_fields, Mapping):
        return dict(metadata_fields)
    return {name: name for name in metadata_fields}


def render_chat(messages: Any) -> str | None:
    """An SFT conversation as one pretraining document: "Question: <user>\nAnswer: <assistant>" per
    exchange, exchanges separated by a blank line (the shape of the few-shot evaluation prompts);
    system turns are left out. None when it is not a conversation with an answer."""
    if not isinstance(messages, list):
        return None
    blocks: list[str] = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return None
        role, content = message.get("role"), message["content"].strip()
        if role == "user":
            blocks.append(f"Question: {content}")
        elif role == "assistant" and blocks and blocks[-1].startswith("Question: "):
            blocks[-1] += f"\nAnswer: {content}"
        elif role == "assistant":
            blocks.append(f"Answer: {content}")
        elif role != "system":
            return None
    if not any("Answer: " in block for block in blocks):
        return None
    return "\n\n".join(blocks)


def _record_meta(record: dict) -> dict:
    """An SFT record's meta (our parquet files store it as JSON text)."""
    meta = record.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            return {}
    return meta if isinstance(meta, dict) else {}


class Quarantine:
    """Per-rank JSONL of skipped records, opened on the first one (a clean shard leaves no file)."""

    def __init__(self, folder: DataFolderLike, source: str):
        self.folder = get_datafolder(folder)
        self.source = source
        self._handle = None
        self._rank = 0

    def start(self, rank: int) -> None:
        self.close()
        self._rank = rank
        path = f"{self.source}/{rank:05d}.jsonl"
        if self.folder.exists(path):
            self.folder.rm(path)  # a rerun of this rank rewrites its quarantine from scratch

    def add(self, reason: str, file: str, line: int | str, raw: Any) -> None:
        if self._handle is None:
            self._handle = self.folder.open(f"{self.source}/{self._rank:05d}.jsonl", "wt")
        excerpt = raw if isinstance(raw, str) else repr(raw)
        excerpt = excerpt[:_EXCERPT].encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
        record = {
            "source": self.source,
            "file": file,
            "line": line,
            "reason": reason,
            "excerpt": excerpt,
        }
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _ValidatingSource:
    """Shared record checks; `self` is also a datatrove reader (for stat_update).

    Subclasses call `_name_source` before the reader's __init__ (stats take the step name from it)."""

    source_name: str
    domain: str
    min_chars: int
    max_chars: int
    quarantine: Quarantine

    def _name_source(self, kind: str, source_name: str) -> None:
        self.name = f"📥 {source_name} ({kind})"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        """The reader's run (next in the MRO), with this rank's quarantine file open around it."""
        self.quarantine.start(rank)
        try:
            yield from super().run(data, rank, world_size)
        finally:
            self.quarantine.close()

    def _init_source(
        self, source_name, domain, quarantine_dir, min_chars, max_chars, metadata_fields, language, render
    ):
        self.render = render
        self.source_name = source_name
        self.domain = domain
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.metadata_fields = _field_map(metadata_fields)
        self.language = language
        self.quarantine = Quarantine(quarantine_dir, source_name)

    def _skip(self, reason: str, file: str, line: int | str, raw: Any) -> None:
        self.stat_update(f"quarantined_{reason}")
        self.quarantine.add(reason, file, line, raw)

    def _make_document(self, record: Any, file: str, line: int | str) -> Document | None:
        if not isinstance(record, dict):
            self._skip("not-an-object", file, line, record)
            return None
        raw_id = record.get(self.id_key)
        if self.render == "chat":
            text = render_chat(record.get("messages"))
            if text is None:
                self._skip("not-a-conversation", file, line, json.dumps(record, default=str)[:_EXCERPT])
                return None
            raw_id = _record_meta(record).get("id", raw_id)
        else:
            text = record.get(self.text_key)
        if text is None:
            self._skip("missing-text-field", file, line, json.dumps(record, default=str)[:_EXCERPT])
            return None
        if not isinstance(text, str):
            self._skip("text-not-a-string", file, line, text)
            return None
        stripped = len(text.strip())
        if stripped < self.min_chars:
            self._skip("empty-text", file, line, text)
            return None
        if len(text) > self.max_chars:
            self._skip("too-large", file, line, f"{len(text)} chars: {text[:_EXCERPT]}")
            return None
        doc_id = f"{self.source_name}/{raw_id}" if raw_id is not None else f"{self.source_name}/{file}:{line}"
        metadata = {"domain": self.domain, "source": self.source_name, "file": file, "line": line}
        for field, key in self.metadata_fields.items():
            if isinstance(record.get(field), str | int | float):
                metadata[key] = record[field]
        if self.language:
            metadata["language"] = self.language
        strings = [text, doc_id, *(v for v in metadata.values() if isinstance(v, str))]
        if any(_SURROGATE.search(value) for value in strings):  # JSON allows them, UTF-8 cannot hold them
            self._skip("lone-surrogate", file, line, text)
            return None
        self.stat_update("documents_read")
        return Document(text=text, id=doc_id, metadata=metadata)


class JsonlSource(_ValidatingSource, BaseDiskReader):
    """JSONL(.gz/.zst) files read line by line, so a broken line costs one record, not the file."""

    def __init__(
        self,
        data_folder: DataFolderLike,
        source_name: str,
        domain: str,
        quarantine_dir: DataFolderLike,
        text_key: str = "text",
        id_key: str = "id",
        glob_pattern: str | None = None,
        min_chars: int = 1,
        max_chars: int = 2_000_000,
        metadata_fields: Iterable[str] | Mapping[str, str] = METADATA_FIELDS,
        language: str | None = None,
        recursive: bool = True,
        render: str = "text",
    ):
        self._name_source("jsonl", source_name)
        super().__init__(
            data_folder, text_key=text_key, id_key=id_key, glob_pattern=glob_pattern, recursive=recursive
        )
        self._init_source(
            source_name, domain, quarantine_dir, min_chars, max_chars, metadata_fields, language, render
        )

    def _lines(self, filepath: str) -> Iterator[tuple[int, bytes]]:
        """(line number, bytes) up to the end of the file or to the damage in a compressed one."""
        lineno = 0
        try:
            with self.data_folder.open(filepath, "rb", compression="infer") as handle:
                for lineno, raw in enumerate(handle, 1):
                    yield lineno, raw
        except _DECOMPRESSION_ERRORS as err:
            self._skip(
                "truncated-or-corrupt-file", filepath, lineno + 1, f"rest of the file unreadable: {err}"
            )

    def read_file(self, filepath: str) -> DocumentsPipeline:
        for lineno, raw in self._lines(filepath):
            if not raw.strip():
                continue
            with self.track_time():
                try:
                    record = json.loads(raw.decode("utf-8-sig"))  # -sig: a leading BOM is not JSON
                except UnicodeDecodeError:
                    self._skip("non-utf8", filepath, lineno, raw[:_EXCERPT].decode("utf-8", "replace"))
                    continue
                except json.JSONDecodeError:
                    self._skip("malformed-json", filepath, lineno, raw[:_EXCERPT].decode("utf-8", "replace"))
                    continue
                document = self._make_document(record, filepath, lineno)
            if document is not None:
                yield document


class ParquetSource(_ValidatingSource, BaseDiskReader):
    """Parquet files; the row number within the file stands for the line."""

    def __init__(
        self,
        data_folder: DataFolderLike,
        source_name: str,
        domain: str,
        quarantine_dir: DataFolderLike,
        text_key: str = "text",
        id_key: str = "id",
        glob_pattern: str | None = None,
        min_chars: int = 1,
        max_chars: int = 2_000_000,
        metadata_fields: Iterable[str] | Mapping[str, str] = METADATA_FIELDS,
        language: str | None = None,
        recursive: bool = True,
        batch_size: int = 1000,
        render: str = "text",
    ):
        self._name_source("parquet", source_name)
        super().__init__(
            data_folder, text_key=text_key, id_key=id_key, glob_pattern=glob_pattern, recursive=recursive
        )
        self._init_source(
            source_name, domain, quarantine_dir, min_chars, max_chars, metadata_fields, language, render
        )
        self.batch_size = batch_size

    def read_file(self, filepath: str) -> DocumentsPipeline:
        import pyarrow as pa
        import pyarrow.parquet as pq

        row = 0
        try:
            with self.data_folder.open(filepath, "rb") as handle, pq.ParquetFile(handle) as parquet:
                for batch in parquet.iter_batches(batch_size=self.batch_size):
                    for record in batch.to_pylist():
                        row += 1
                        document = self._make_document(record, filepath, row)
                        if document is not None:
                            yield document
        except (pa.ArrowException, OSError) as err:  # truncated or corrupt file: keep the rows before
            self._skip("truncated-or-corrupt-file", filepath, row + 1, f"rest of the file unreadable: {err}")


class HFDiskSource(_ValidatingSource, HuggingFaceDatasetReader):
    """An HF dataset written with `Dataset.save_to_disk`, sharded by rows across tasks."""

    def __init__(
        self,
        dataset_path: str,
        source_name: str,
        domain: str,
        quarantine_dir: DataFolderLike,
        text_key: str = "text",
        id_key: str = "id",
        min_chars: int = 1,
        max_chars: int = 2_000_000,
        metadata_fields: Iterable[str] | Mapping[str, str] = METADATA_FIELDS,
        language: str | None = None,
        render: str = "text",
    ):
        self._name_source("hf_disk", source_name)
        super().__init__(dataset_path, text_key=text_key, id_key=id_key, load_from_disk=True)
        self._init_source(
            source_name, domain, quarantine_dir, min_chars, max_chars, metadata_fields, language, render
        )

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file: int | str):
        return self._make_document(data, source_file, id_in_file)


class StageOutputReader(JsonlReader):
    """The JSONL a previous executor of the run wrote; none at all (every document was filtered out)
    is an empty input here, so that the run reaches its report instead of datatrove's "No files"."""

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.data_folder.exists("") and self.data_folder.list_files(glob_pattern=self.glob_pattern):
            yield from super().run(data, rank, world_size)
