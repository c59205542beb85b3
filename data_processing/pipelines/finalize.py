"""Last executor of a run (one task, so it also runs as a dependent SLURM job): merge the per-task
shards of each domain into `<domain>.bin/.idx` with megatron-core's IndexedDatasetBuilder, then write
manifest.json, decontamination_report.json, report.md and funnel.png. All outputs are written to temp
names and renamed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

from datatrove.pipeline.base import PipelineStep
from loguru import logger

from megatron_infi.data.indexed import integrity_record
from megatron_infi.data_processing.pipelines.config import DOMAINS
from megatron_infi.data_processing.pipelines.layout import RunLayout
from megatron_infi.data_processing.pipelines.source_checks import EmptySourceError, source_report
from megatron_infi.data_processing.steps.funnel import BY_SOURCE
from megatron_infi.utils import atomic_write_json, sha256_file

FUNNEL_STAGES = ("input", "heuristic", "recall", "dedup", "quality", "decontamination")


def _domain_order(name: str) -> tuple[int, str]:
    return (DOMAINS.index(name) if name in DOMAINS else len(DOMAINS), name)


def merge_domain_shards(shard_dir: Path, out_prefix: Path) -> dict:
    """Concatenate `shard_dir/<rank>.bin/.idx` (rank order) into `out_prefix.bin/.idx`.

    This is IndexedDatasetBuilder.add_index without its per-shard `gc.collect()` (0.4 s each in a
    process that has imported torch, i.e. minutes for thousands of shards): shard indices are read
    with IndexedDataset, bytes copied as they are, and the builder writes the merged index.
    """
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    prefixes = sorted(str(p.with_suffix("")) for p in shard_dir.glob("*.idx"))
    dtype = IndexedDataset(prefixes[0]).index.dtype
    tmp = out_prefix.with_name(f".{out_prefix.name}.tmp")
    builder = IndexedDatasetBuilder(f"{tmp}.bin", dtype=dtype)
    for prefix in prefixes:
        shard = IndexedDataset(prefix)
        if shard.index.dtype != dtype:
            raise ValueError(f"{prefix}.idx holds {shard.index.dtype.__name__} tokens, not {dtype.__name__}")
        offset = len(builder.sequence_lengths)
        builder.sequence_lengths.extend(shard.sequence_lengths.tolist())
        builder.document_indices.extend((offset + shard.document_indices[1:]).tolist())
        with open(f"{prefix}.bin", "rb") as handle:
            shutil.copyfileobj(handle, builder.data_file)
        del shard
    builder.finalize(f"{tmp}.idx")
    os.replace(f"{tmp}.bin", f"{out_prefix}.bin")
    os.replace(f"{tmp}.idx", f"{out_prefix}.idx")
    return {
        "prefix": out_prefix.name,
        "bin": f"{out_prefix.name}.bin",
        "idx": f"{out_prefix.name}.idx",
        # documents, tokens, file sizes, max_token_id and checksums: what the trainer's preflight checks
        **integrity_record(out_prefix),
        "shards": len(prefixes),
        "dtype": dtype.__name__,
    }


def collect_funnel(layout: RunLayout) -> dict[str, dict[str, dict[str, int]]]:
    funnel: dict[str, dict[str, dict[str, int]]] = {}
    for stage in FUNNEL_STAGES:
        folder = layout.funnel / stage
        if not folder.is_dir():
            continue
        totals: dict[str, dict[str, int]] = defaultdict(lambda: {"documents": 0, "chars": 0, "tokens": 0})
        for part in sorted(folder.glob("*.json")):
            for domain, row in json.loads(part.read_text())["domains"].items():
                for key, value in row.items():
                    totals[domain][key] += value
        funnel[stage] = {d: totals[d] for d in sorted(totals, key=_domain_order)}
    return funnel


def _total(value) -> float:
    return value.total if hasattr(value, "total") else value


def collect_step_stats(layout: RunLayout, stage_groups: dict[str, dict[str, list[int]]]) -> dict:
    """Per pipeline stage: each step's kept / dropped counts and drop (or quarantine) reasons."""
    from datatrove.utils.stats import PipelineStats

    stages: dict[str, list[dict]] = {}
    for executor, groups in stage_groups.items():
        parts = sorted((layout.logs / executor / "stats").glob("*.json"))
        if not parts:
            continue
        merged = sum(
            (PipelineStats.from_json(json.loads(p.read_text())) for p in parts), start=PipelineStats()
        )
        for label, positions in groups.items():
            rows = []
            for pos in positions:
                step = merged.stats[pos]
                values = {k: _total(v) for k, v in step.stats.items()}
                reasons = {
                    k.split("_", 1)[1]: int(v)
                    for k, v in values.items()
                    if k.startswith(("dropped_", "quarantined_"))
                }
                if label == "dedup" and values.get("dropped"):
                    reasons.setdefault("minhash_duplicate", int(values["dropped"]))
                by_source: dict[str, dict[str, int]] = defaultdict(dict)
                for key, value in values.items():
                    if key.startswith(BY_SOURCE):
                        source, reason = key[len(BY_SOURCE) :].split(":", 1)
                        by_source[source][reason] = int(value)
                rows.append(
                    {
                        "step": step.name,
                        "total": int(values.get("total", values.get("documents_read", 0))),
                        "kept": int(values.get("forwarded", values.get("documents_read", 0))),
                        "dropped": int(
                            values.get(
                                "dropped", sum(v for k, v in values.items() if k.startswith("quarantined_"))
                            )
                        ),
                        "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
                        "by_source": dict(by_source),
                    }
                )
            stages[label] = rows
    return stages


def collect_quarantine(layout: RunLayout) -> dict:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for part in sorted(layout.quarantine.glob("*/*.jsonl")):
        for line in part.read_text().splitlines():
            record = json.loads(line)
            counts[record["source"]][record["reason"]] += 1
    return {source: dict(reasons) for source, reasons in counts.items()}


def build_decontamination_report(layout: RunLayout, config: dict) -> dict:
    from megatron_infi.data_processing.decontamination.ngram import DEFAULT_TEXT_FIELDS, load_benchmark_items

    dcfg = config["decontamination"]
    benchmarks = []
    for bench in dcfg["benchmarks"]:
        items = load_benchmark_items(
            bench["path"], bench.get("name"), bench.get("text_fields") or DEFAULT_TEXT_FIELDS
        )
        name = items[0].benchmark if items else bench.get("name") or Path(bench["path"]).name.split(".")[0]
        benchmarks.append({"name": name, "path": bench["path"], "items": len({i.item_id for i in items})})
    matches = []
    for part in sorted(layout.decontamination.glob("*.jsonl")):
        matches += [json.loads(line) for line in part.read_text().splitlines() if line.strip()]
    by_item: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for record in matches:
        for match in record["matches"]:
            by_item[match["benchmark"]][match["item_id"]].append(record["document"])
    return {
        "n": dcfg["n"],
        "benchmarks": benchmarks,
        "documents_dropped": len(matches),
        "items_matched": sum(len(items) for items in by_item.values()),
        "by_benchmark": {b: dict(items) for b, items in by_item.items()},
        "documents": matches,
    }


def describe_sources(config: dict) -> list[dict]:
    rows = []
    for source in config["sources"]:
        path = Path(source["path"])
        files = (
            [path]
            if path.is_file()
            else sorted(p for p in path.rglob(source.get("glob") or "*") if p.is_file())
        )
        rows.append(
            {
                **{k: source[k] for k in ("name", "path", "format", "domain", "text_field")},
                "files": len(files),
                "bytes": sum(p.stat().st_size for p in files),
            }
        )
    return rows


class FinalizeRun(PipelineStep):
    name = "📦 Merge shards + manifest + report"
    type = "📦 - FINALIZE"

    def __init__(
        self,
        root: str,
        config: dict,
        tokenizer_path: str,
        tokenizer_is_dir: bool,
        eod_token: str,
        stage_groups: dict[str, dict[str, list[int]]],
    ):
        super().__init__()
        self.root = root
        self.config = config
        self.tokenizer_path = tokenizer_path
        self.tokenizer_is_dir = tokenizer_is_dir
        self.eod_token = eod_token
        self.stage_groups = stage_groups

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from tokenizers import Tokenizer

        from megatron_infi.data_processing.pipelines.report import write_report

        layout = RunLayout(self.root)
        domains = {}
        for shard_dir in sorted(layout.tokens.glob("*"), key=lambda p: _domain_order(p.name)):
            if shard_dir.is_dir() and any(shard_dir.glob("*.idx")):
                domains[shard_dir.name] = merge_domain_shards(shard_dir, layout.root / shard_dir.name)
        tokenizer = Tokenizer.from_file(self.tokenizer_path)
        dtypes = {d["dtype"] for d in domains.values()}
        decontamination = None
        if self.config["decontamination"]["enabled"]:
            decontamination = build_decontamination_report(layout, self.config)
            atomic_write_json(layout.root / "decontamination_report.json", decontamination)
        manifest = {
            "format": "megatron-indexed-dataset",
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "tokenizer": {
                # the HF tokenizer dir the trainer loads (data.tokenizer), when one was given
                "path": str(Path(self.tokenizer_path).parent)
                if self.tokenizer_is_dir
                else self.tokenizer_path,
                "tokenizer_json": self.tokenizer_path,
                "sha256": sha256_file(self.tokenizer_path),
                "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
                "eod_token": self.eod_token,
                "eod_id": tokenizer.token_to_id(self.eod_token),
            },
            "dtype": dtypes.pop() if len(dtypes) == 1 else sorted(dtypes),
            "documents": sum(d["documents"] for d in domains.values()),
            "tokens": sum(d["tokens"] for d in domains.values()),
            "domains": domains,
            "sources": describe_sources(self.config),
            "quarantined": collect_quarantine(layout),
            "stages": collect_step_stats(layout, self.stage_groups),
            "funnel": collect_funnel(layout),
            "decontamination": None
            if decontamination is None
            else {
                "report": "decontamination_report.json",
                "documents_dropped": decontamination["documents_dropped"],
            },
            "config": self.config,
            "versions": {pkg: version(pkg) for pkg in ("datatrove", "megatron-core", "tokenizers")},
        }
        manifest.update(source_report(self.config, manifest["stages"]))
        write_report(layout.root, manifest)
        atomic_write_json(layout.root / "manifest.json", manifest)
        for warning in manifest["warnings"]:
            logger.warning(warning["message"])
        failed = [e["message"] for e in manifest["empty_sources"] if not e["allow_empty"]]
        if failed and self.config["executor"]["kind"] == "slurm":  # locally, pretrain.run says it
            raise EmptySourceError("; ".join(failed))
