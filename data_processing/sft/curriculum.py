"""Curriculum output (InfiAlign step 6 of our pipeline): the verified selection split into phase 1
(foundational: shorter responses, or listed domains) and phase 2 (advanced: the rest), written as
JSONL or Parquet, plus selection_stats.json and the report. One task, after every quality task.
The written records' prompts are rendered under the prompt contract, recorded in each record's meta.
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from megatron_infi.config.prompt import PromptContract
from megatron_infi.data_processing.sft.config import CurriculumConfig
from megatron_infi.data_processing.sft.records import under_contract
from megatron_infi.data_processing.sft.report import write_report
from megatron_infi.data_processing.sft.steps import iter_shards
from megatron_infi.utils import atomic_write_bytes, atomic_write_json, write_jsonl


def split_phases(records: list[dict[str, Any]], cfg: CurriculumConfig) -> tuple[list[dict], list[dict], int]:
    """(phase 1, phase 2, split length): forced domains first, the rest by response length rank."""
    forced1 = [r for r in records if r["meta"].get("domain") in cfg.phase1_domains]
    forced2 = [r for r in records if r["meta"].get("domain") in cfg.phase2_domains]
    free = [r for r in records if r["meta"].get("domain") not in cfg.phase1_domains + cfg.phase2_domains]
    free.sort(key=lambda r: (r["meta"].get("response_tokens", 0), r["meta"]["id"]))
    cut = round(cfg.phase1_fraction * len(free))
    split = free[cut - 1]["meta"].get("response_tokens", 0) if cut else 0
    phase1, phase2 = forced1 + free[:cut], forced2 + free[cut:]
    for phase, group in ((1, phase1), (2, phase2)):
        for record in group:
            record["meta"]["phase"] = phase
    key = lambda r: r["meta"]["id"]  # noqa: E731
    return sorted(phase1, key=key), sorted(phase2, key=key), split


def write_records(path: Path, records: list[dict[str, Any]], fmt: str) -> None:
    """SFT records as JSONL or Parquet (meta as JSON text: its keys differ by source); every reader of
    SFT data takes both (megatron_infi.utils.iter_rows)."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # meta is heterogeneous across sources (optional keys, mixed value types): one JSON column.
        table = pa.Table.from_pylist(
            [{"messages": r["messages"], "meta": json.dumps(r["meta"], ensure_ascii=False)} for r in records],
            schema=pa.schema(
                [
                    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
                    ("meta", pa.string()),
                ]
            ),
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        return
    write_jsonl(path, records)


def merge_shard_stats(directory: Path) -> dict[str, Any]:
    kept, dropped, examples = 0, Counter(), defaultdict(list)
    contamination: dict[tuple[str, str, str], dict] = {}
    for path in sorted(directory.glob("*.stats.json")):
        stats = json.loads(path.read_text())
        kept += stats["kept"]
        dropped.update(stats["dropped"])
        for reason, where in stats["examples"].items():
            examples[reason].extend(where[: 5 - len(examples[reason])])
        for hit in stats["contamination"]:
            key = (hit["benchmark"], hit["item_id"], hit["method"])
            entry = contamination.setdefault(
                key,
                {
                    "benchmark": key[0],
                    "item_id": key[1],
                    "method": key[2],
                    "samples": 0,
                    "evidence": hit["evidence"],
                    "sample_ids": [],
                },
            )
            entry["samples"] += 1
            if len(entry["sample_ids"]) < 10:
                entry["sample_ids"].append(hit["sample"])
    ordered = sorted(contamination.values(), key=lambda c: (-c["samples"], c["benchmark"], c["item_id"]))
    return {"kept": kept, "dropped": dict(dropped), "examples": dict(examples), "contamination": ordered}


class FinalizeStep(PipelineStep):
    name = "curriculum + report"
    type = "📝 - REPORT"

    def __init__(
        self,
        work: str,
        output_dir: str,
        cfg: CurriculumConfig,
        summary: dict[str, Any],
        contract: PromptContract,
    ):
        super().__init__()
        self.work, self.output_dir, self.cfg, self.summary = work, output_dir, cfg, summary
        self.contract = contract

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        finalize(Path(self.work), Path(self.output_dir), self.cfg, self.summary, self.contract)
        return iter(())


def finalize(
    work: Path, out: Path, cfg: CurriculumConfig, summary: dict[str, Any], contract: PromptContract
) -> dict[str, Any]:
    records = []
    for shard in iter_shards(work / "verified"):
        with open(shard, encoding="utf-8") as handle:
            records.extend(under_contract(json.loads(line), contract) for line in handle if line.strip())
    phase1, phase2, split = split_phases(records, cfg)
    suffix = "parquet" if cfg.format == "parquet" else "jsonl"
    files = {1: out / f"phase1.{suffix}", 2: out / f"phase2.{suffix}"}
    write_records(files[1], phase1, cfg.format)
    write_records(files[2], phase2, cfg.format)
    quality = merge_shard_stats(work / "verified")
    quality["verified"] = sum(1 for r in records if r["meta"].get("verified"))
    quality["corrected"] = sum(1 for r in records if r["meta"].get("corrected_attempts"))
    stats = {
        **summary,
        "prompt_contract": contract.to_dict(),
        "prepare": merge_shard_stats(work / "prepared"),
        "select": json.loads((work / "selected" / "stats.json").read_text()),
        "quality": quality,
        "curriculum": {
            "phase1": len(phase1),
            "phase2": len(phase2),
            "phase1_file": files[1].name,
            "phase2_file": files[2].name,
            "split_tokens": split,
            "domains_phase1": dict(Counter(r["meta"].get("domain") for r in phase1)),
            "domains_phase2": dict(Counter(r["meta"].get("domain") for r in phase2)),
        },
    }
    pool = np.load(work / "selected" / "pool.npz")
    lengths = {
        "pool": pool["tokens"],
        "phase 1": np.array([r["meta"].get("response_tokens", 0) for r in phase1]),
        "phase 2": np.array([r["meta"].get("response_tokens", 0) for r in phase2]),
    }
    atomic_write_json(out / "selection_stats.json", stats)
    write_report(out, stats, lengths)
    return stats
