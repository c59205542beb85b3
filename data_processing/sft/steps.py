"""datatrove PipelineSteps of the sharded parts of selection (prepare, quality) and synthesis.

A Document carries one canonical record in `metadata["record"]` (text = the prompt, id = meta.id).
A step that rejects a record does not drop the Document: it sets `metadata["dropped"]` to the reason
and passes it on; later steps skip it and `ShardWriter` writes it to `rejected/` with its reason,
so nothing is lost and the report's funnel counts every reason. Batching steps (LLM, tokenizer,
encoder) work on chunks of `batch_size` documents.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from megatron_infi.data_processing.sft.config import InputSpec, LLMTask, QualityConfig
from megatron_infi.data_processing.sft.filters import RuleFilter
from megatron_infi.data_processing.sft.formats import expand_paths, to_canonical
from megatron_infi.data_processing.sft.records import (
    RecordError,
    has_response,
    prompt_text,
    response_text,
    with_response,
)
from megatron_infi.errors import DataError
from megatron_infi.utils import atomic_write_json, count_rows, iter_rows


def record_doc(record: dict[str, Any]) -> Document:
    return Document(text=prompt_text(record), id=record["meta"]["id"], metadata={"record": record})


def dropped_doc(reason: str, where: str, raw: Any = None) -> Document:
    return Document(text="", id=where, metadata={"dropped": reason, "where": where, "raw": raw})


def live(doc: Document) -> bool:
    return "dropped" not in doc.metadata


def drop(doc: Document, reason: str) -> None:
    doc.metadata["dropped"] = reason


@lru_cache(maxsize=4)
def get_encoder(path: str | None, max_tokens: int | None = 128):
    """One encoder per process (tasks run in-process share it)."""
    from megatron_infi.data_processing.decontamination.embedding import SentenceEncoder

    return SentenceEncoder(path, max_seq_length=max_tokens)


def llm_key(llm) -> str:
    """A GenerationConfig (or its dict) as a JSON string: picklable, and the cache key below."""
    from megatron_infi.config.core import to_dict

    return json.dumps(to_dict(llm), sort_keys=True)


@lru_cache(maxsize=2)
def get_backend(llm_json: str):
    from megatron_infi.data_processing.sft.llm import build_llm

    return build_llm(json.loads(llm_json))


class SFTReader(PipelineStep):
    """Reads every input and converts rows to canonical records. Shards by file when there are at
    least as many files as tasks, else by row (each task parses only its own rows)."""

    name = "SFT inputs"
    type = "📖 - READER"

    def __init__(self, inputs: list[InputSpec]):
        super().__init__()
        self.inputs = inputs

    def files(self) -> list[tuple[InputSpec, Path]]:
        found = []
        for spec in self.inputs:
            paths = expand_paths(spec.path)
            if not paths:
                raise DataError(f"input {spec.path!r} matches no file")
            found.extend((spec, path) for path in paths)
        return found

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        files = self.files()
        by_file = len(files) >= world_size
        counter = 0
        for file_index, (spec, path) in enumerate(files):
            if by_file and file_index % world_size != rank:
                continue
            if by_file:
                keep = lambda index: True  # noqa: E731
            else:
                offset = counter
                keep = lambda index, offset=offset: (offset + index) % world_size == rank  # noqa: E731
            for where, obj, bad in iter_rows(path, keep):
                if obj is None:
                    yield dropped_doc(f"bad-row: {bad}", where)
                    continue
                try:
                    record = to_canonical(
                        obj,
                        spec.format,
                        spec.source or path.name.split(".")[0],
                        spec.task,
                        spec.domain,
                        spec.fields,
                    )
                except RecordError as err:
                    yield dropped_doc(f"bad-record: {err.reason}", f"{where} {err.detail}".strip(), obj)
                    continue
                record["meta"]["origin"] = where
                self.stat_update("records")
                yield record_doc(record)
            if not by_file:
                counter += count_rows(path)


class RecordStep(PipelineStep):
    """A step that looks at live records one batch at a time and may drop some."""

    batch_size = 256

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for batch in batched(data, self.batch_size):
            docs = [d for d in batch if live(d)]
            if docs:
                with self.track_time(unit="batch"):
                    self.process(docs, rank)
                for doc in docs:
                    if not live(doc):
                        self.stat_update(doc.metadata["dropped"])
            yield from batch

    def process(self, docs: list[Document], rank: int) -> None:
        raise NotImplementedError


class _RuleStep(RecordStep):
    """Drops the records for which one of the RuleFilter's checks gives a reason."""

    type = "🔻 - FILTER"

    def __init__(self, rules: RuleFilter):
        super().__init__()
        self.rules = rules

    def reason(self, record: dict) -> str | None:
        raise NotImplementedError

    def process(self, docs, rank):
        for doc in docs:
            reason = self.reason(doc.metadata["record"])
            if reason:
                drop(doc, reason)


class LanguageStep(_RuleStep):
    name = "language"

    def reason(self, record):
        return self.rules.language_reason(record)


class CotStep(RecordStep):
    """Teacher chain-of-thought for records with a question but no response (InfiAlign step 1)."""

    name = "teacher CoT"
    type = "🤖 - LLM"

    def __init__(self, llm, sampling: LLMTask, seed: int = 0):
        super().__init__()
        self.llm, self.sampling, self.seed = llm_key(llm), sampling, seed

    def process(self, docs, rank):
        from megatron_infi.data_processing.sft.llm import generate_cot

        todo = [d for d in docs if not has_response(d.metadata["record"])]
        if not todo:
            return
        replies = generate_cot(
            get_backend(self.llm), [d.metadata["record"] for d in todo], self.sampling, self.seed
        )
        for doc, reply in zip(todo, replies, strict=True):
            record = with_response(doc.metadata["record"], reply)
            record["meta"]["cot_generated"] = True
            record["meta"].pop("needs_cot", None)
            doc.metadata["record"] = record


class TokenLengthStep(RecordStep):
    """Response length in tokens of the SFT tokenizer: the difficulty proxy (InfiAlign step 3)."""

    name = "response tokens"
    type = "🔢 - TOKENIZER"

    def __init__(self, tokenizer_dir: str):
        super().__init__()
        self.tokenizer_dir = tokenizer_dir

    def process(self, docs, rank):
        tokenizer = _tokenizer(self.tokenizer_dir)
        texts = [response_text(d.metadata["record"]) for d in docs]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        for doc, length in zip(docs, lengths, strict=True):
            doc.metadata["record"]["meta"]["response_tokens"] = length


@lru_cache(maxsize=2)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


class ResponseRulesStep(_RuleStep):
    name = "response rules"

    def reason(self, record):
        return self.rules.response_reason(record)


class DomainLabelStep(RecordStep):
    """LLM domain labels for records without one (InfiAlign step 2)."""

    name = "domain labels"
    type = "🤖 - LLM"

    def __init__(self, llm, domains: list[str], default: str, sampling: LLMTask, seed: int = 0):
        super().__init__()
        self.llm, self.domains, self.default = llm_key(llm), domains, default
        self.sampling, self.seed = sampling, seed

    def process(self, docs, rank):
        from megatron_infi.data_processing.sft.llm import label_domains

        todo = [d for d in docs if not d.metadata["record"]["meta"].get("domain")]
        if not todo:
            return
        labels = label_domains(
            get_backend(self.llm),
            [d.metadata["record"] for d in todo],
            self.domains,
            self.sampling,
            self.seed,
        )
        for doc, label in zip(todo, labels, strict=True):
            meta = doc.metadata["record"]["meta"]
            meta["domain"] = label or self.default
            meta["domain_source"] = "llm" if label else "llm-unparsed"
            self.stat_update("labelled" if label else "label unparsed")


class EmbedStep(RecordStep):
    """Sentence embedding of the prompt, for clusters and embedding decontamination."""

    name = "embed prompts"
    type = "🧭 - EMBED"
    batch_size = 512

    def __init__(self, encoder: str | None, max_tokens: int | None = 128):
        super().__init__()
        self.encoder, self.max_tokens = encoder, max_tokens

    def process(self, docs, rank):
        vectors = get_encoder(self.encoder, self.max_tokens).encode([d.text for d in docs])
        for doc, vector in zip(docs, vectors, strict=True):
            doc.metadata["embedding"] = vector


class DecontaminateStep(RecordStep):
    name = "decontaminate"
    type = "🔻 - FILTER"

    def __init__(
        self,
        benchmarks: list[str],
        ngram: int,
        threshold: float | None,
        encoder: str | None,
        max_tokens: int | None,
        cache: str,
    ):
        super().__init__()
        self.benchmarks, self.ngram, self.threshold = benchmarks, ngram, threshold
        self.encoder, self.max_tokens, self.cache = encoder, max_tokens, cache
        self._set = None

    def process(self, docs, rank):
        from megatron_infi.data_processing.sft.decontaminate import BenchmarkSet

        if self._set is None:
            encoder = get_encoder(self.encoder, self.max_tokens) if self.threshold is not None else None
            self._set = BenchmarkSet.build(self.benchmarks, self.ngram, self.threshold, encoder, self.cache)
        vectors = (
            np.stack([d.metadata["embedding"] for d in docs]) if "embedding" in docs[0].metadata else None
        )
        for doc, hit in zip(
            docs, self._set.check([d.metadata["record"] for d in docs], vectors), strict=True
        ):
            if hit:
                doc.metadata["record"]["meta"]["contamination"] = hit
                drop(doc, f"contaminated: {hit['method']}")


class QualityStep(RecordStep):
    """Verification, correction loop and LLM scores over this task's share of the selected set."""

    name = "quality"
    type = "✅ - VERIFY"
    batch_size = 1024

    def __init__(self, cfg: QualityConfig, rules: RuleFilter, llm, seed: int = 0):
        super().__init__()
        self.cfg, self.rules, self.seed = cfg, rules, seed
        self.llm = llm_key(llm) if llm else None

    def process(self, docs, rank):
        from megatron_infi.data_processing.sft.quality import run_quality

        backend = (
            get_backend(self.llm)
            if self.llm and (self.cfg.correction_retries or self.cfg.llm_score)
            else None
        )
        by_id = {d.metadata["record"]["meta"]["id"]: d for d in docs}
        kept, dropped = run_quality(
            [d.metadata["record"] for d in docs], self.cfg, self.rules, backend, self.seed
        )
        for record in kept:
            by_id[record["meta"]["id"]].metadata["record"] = record
        for record, reason in dropped:
            drop(by_id[record["meta"]["id"]], reason)


class JsonlShardReader(PipelineStep):
    """Canonical records of one record file, row-sharded over tasks."""

    name = "selected records"
    type = "📖 - READER"

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for where, obj, bad in iter_rows(Path(self.path), keep=lambda index: index % world_size == rank):
            yield record_doc(obj) if obj is not None else dropped_doc(f"bad-row: {bad}", where)


class ShardWriter(PipelineStep):
    """Writes this task's kept records (and their embeddings), rejected records with reasons, and a
    stats file; each file is written under a temp name and renamed when the task ends."""

    name = "shard writer"
    type = "💽 - WRITER"

    def __init__(self, out_dir: str, with_embeddings: bool = False, keep_rejected: bool = True):
        super().__init__()
        self.out_dir, self.with_embeddings, self.keep_rejected = out_dir, with_embeddings, keep_rejected

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        out = Path(self.out_dir)
        (out / "rejected").mkdir(parents=True, exist_ok=True)
        kept_path, rejected_path = out / f"{rank:05d}.jsonl", out / "rejected" / f"{rank:05d}.jsonl"
        tmp_kept, tmp_rejected = _tmp(kept_path), _tmp(rejected_path)
        reasons: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        contamination: list[dict] = []
        vectors: list[np.ndarray] = []
        kept = 0
        with (
            open(tmp_kept, "w", encoding="utf-8") as kept_file,
            open(tmp_rejected, "w", encoding="utf-8") as rejected_file,
        ):
            for doc in data:
                if live(doc):
                    kept_file.write(json.dumps(doc.metadata["record"], ensure_ascii=False) + "\n")
                    if self.with_embeddings:
                        vectors.append(doc.metadata["embedding"])
                    kept += 1
                    continue
                reason = doc.metadata["dropped"]
                reasons[reason] += 1
                record = doc.metadata.get("record")
                where = (
                    record["meta"].get("origin", record["meta"]["id"])
                    if record
                    else doc.metadata.get("where", doc.id)
                )
                bucket = examples.setdefault(reason, [])
                if len(bucket) < 5:
                    bucket.append(where)
                if record and "contamination" in record["meta"]:
                    contamination.append({**record["meta"]["contamination"], "sample": record["meta"]["id"]})
                if self.keep_rejected:
                    row = record if record else {"raw": doc.metadata.get("raw"), "where": where}
                    rejected_file.write(
                        json.dumps({"reason": reason, **row}, ensure_ascii=False, default=str) + "\n"
                    )
        if self.with_embeddings:
            dim = len(vectors[0]) if vectors else 0
            matrix = np.stack(vectors).astype(np.float16) if vectors else np.zeros((0, dim), dtype=np.float16)
            tmp_npy = _tmp(out / f"{rank:05d}.npy")
            with open(tmp_npy, "wb") as handle:
                np.save(handle, matrix)
            os.replace(tmp_npy, out / f"{rank:05d}.npy")
        os.replace(tmp_kept, kept_path)
        os.replace(tmp_rejected, rejected_path)
        stats = {
            "rank": rank,
            "kept": kept,
            "dropped": dict(reasons),
            "examples": examples,
            "contamination": contamination,
        }
        atomic_write_json(out / f"{rank:05d}.stats.json", stats)
        self.stat_update("kept", value=kept)
        return iter(())


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def iter_shards(directory: str | Path) -> Iterator[Path]:
    yield from sorted(Path(directory).glob("[0-9][0-9][0-9][0-9][0-9].jsonl"))
