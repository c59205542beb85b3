"""InfiAlign's DPO problem set from SFT data (sft-select's curriculum, sft-synthesize's output), in order:
  1. verifiable problems only: maths whose reference answer math-verify can compare by value, code
     with tests (open-ended records have nothing to check a model's answer against);
  2. one problem per prompt (normalised last user turn);
  3. decontaminated against the benchmarks (n-gram overlap, prompt-embedding cosine);
  4. the hardest first (the longest reference response, InfiAlign's difficulty proxy; ties in a seeded
     order), each expert response verified again (math-verify / the code sandbox) until
     ceil(target_pairs / expected_pair_rate) problems are in: `infi dpo-pairs` keeps the ones the SFT
     model gets wrong (challenge selection) and pairs a wrong answer with the expert response.

input:
  inputs: SFT record files (JSONL, JSONL.gz, JSON or Parquet), the canonical records sft-select and
  sft-synthesize write; maths records carry a checkable answer, code records tests:
    {"messages": [{"role": "user", "content": "What is 2+3?"},
                  {"role": "assistant", "content": "2+3=5. The answer is 5."}],
     "meta": {"id": "m1", "task": "math", "answer": "5"}}
  decontamination.benchmarks: JSONL files of benchmark problems whose near-copies are dropped

output (under output_dir):
  problems.jsonl   `infi dpo-pairs`'s problems: id, domain math | code, messages (the prompt turns),
                   answer or tests + entry_point, solution (the verified expert response)
  report.json, report.md   counts per step and reason, contamination per benchmark item

example config: launch/configs/sft_data/infialign_dpo_problems.yaml
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from megatron_infi.config.core import dump_yaml, parse_stage_config
from megatron_infi.data_processing.sft.config import DPOProblemsConfig, FilterConfig, QualityConfig
from megatron_infi.data_processing.sft.formats import read_records
from megatron_infi.data_processing.sft.records import (
    conversation_prefix,
    last_prompt,
    prompt_text,
    response_text,
)
from megatron_infi.errors import DataError, command
from megatron_infi.utils import SkipCounter, atomic_write_json, atomic_write_text, set_run_caches, write_jsonl


def unverifiable_reason(record: dict[str, Any], tasks: list[str]) -> str | None:
    """Why a record cannot be a DPO problem, or None."""
    from megatron_infi.scoring.math import checkable_answer

    meta = record["meta"]
    task = meta["task"]
    if not response_text(record).strip():
        return "no expert response"
    if task == "open":
        return "not verifiable: open-ended"
    if task not in tasks:
        return f"task {task} not wanted"
    if task == "math" and not checkable_answer(str(meta.get("answer") or "")):
        return "not verifiable: answer is not a value math-verify can check"
    if task == "code" and not meta.get("tests"):
        return "not verifiable: code without tests"
    return None


def difficulty(record: dict[str, Any], seed: int) -> tuple[int, str]:
    """Sort key, hardest first: the reference response's length (tokens as the selection counted
    them, else characters / 4), then a seeded hash of the id."""
    meta = record["meta"]
    length = meta.get("response_tokens") or len(response_text(record)) // 4
    tie = hashlib.sha256(f"{seed}:{meta['id']}".encode()).hexdigest()
    return -int(length), tie


def problem_record(record: dict[str, Any]) -> dict[str, Any]:
    """An SFT record -> the problem record `infi dpo-pairs` reads."""
    meta = record["meta"]
    task = meta["task"]
    problem = {
        "id": meta["id"],
        "domain": task,
        "messages": conversation_prefix(record),
        "solution": response_text(record),
        "source": meta.get("source"),
        "topic": meta.get("domain"),
        "response_tokens": meta.get("response_tokens"),
    }
    if task == "math":
        problem["answer"] = str(meta["answer"])
    else:
        problem["tests"] = meta["tests"]
        if meta.get("entry_point"):
            problem["entry_point"] = meta["entry_point"]
    return problem


def _contamination(cfg: DPOProblemsConfig, records: list[dict]) -> list[dict | None]:
    dc = cfg.decontamination
    if not dc.benchmarks or not (dc.ngram or dc.embedding_threshold is not None):
        return [None] * len(records)
    from megatron_infi.data_processing.sft.decontaminate import BenchmarkSet
    from megatron_infi.data_processing.sft.steps import get_encoder

    encoder = get_encoder(cfg.encoder) if dc.embedding_threshold is not None else None
    benchmarks = BenchmarkSet.build(dc.benchmarks, dc.ngram, dc.embedding_threshold, encoder)
    vectors = encoder.encode([prompt_text(r) for r in records]) if encoder is not None and records else None
    return benchmarks.check(records, vectors)


def _verify_hardest(cfg: DPOProblemsConfig, ranked: list[dict], dropped: SkipCounter) -> list[dict]:
    """Verify expert responses in difficulty order, in batches, until enough pass."""
    from megatron_infi.data_processing.sft.filters import RuleFilter
    from megatron_infi.data_processing.sft.quality import Verifier, verify_all

    quality = QualityConfig(
        timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, unsafe_no_sandbox=cfg.unsafe_no_sandbox
    )
    verifier = Verifier(quality, RuleFilter.from_config(FilterConfig(languages=[])))
    kept: list[dict] = []
    start = 0
    while len(kept) < cfg.problem_count and start < len(ranked):
        batch = ranked[start : start + max(cfg.workers * 8, cfg.problem_count - len(kept))]
        start += len(batch)
        for record, verdict in zip(batch, verify_all(verifier, batch, cfg.workers, "verify"), strict=True):
            if not (verdict.ok and verdict.verified):
                dropped.skip(
                    f"expert response fails: {verdict.reason or 'nothing checked'}", record["meta"]["id"]
                )
            elif len(kept) < cfg.problem_count:
                kept.append(record)
    return kept


def build_problems(cfg: DPOProblemsConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    for i, path in enumerate(cfg.inputs):
        if not Path(path).is_file():
            raise DataError(f"inputs[{i}]: file not found: {path}")
    for i, path in enumerate(cfg.decontamination.benchmarks):
        if not Path(path).is_file():
            raise DataError(f"decontamination.benchmarks[{i}]: file not found: {path}")
    out.mkdir(parents=True, exist_ok=True)
    set_run_caches(out)
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))

    skipped, dropped = SkipCounter(), SkipCounter()
    records = [r for path in cfg.inputs for r in read_records(path, skipped)]
    candidates, seen = [], set()
    for record in records:
        reason = unverifiable_reason(record, cfg.tasks)
        prompt = " ".join(last_prompt(record).lower().split())
        if reason is None and prompt in seen:
            reason = "duplicate prompt"
        if reason:
            dropped.skip(reason, record["meta"]["id"])
            continue
        seen.add(prompt)
        candidates.append(record)
    contamination = []
    clean = []
    for record, hit in zip(candidates, _contamination(cfg, candidates), strict=True):
        if hit is None:
            clean.append(record)
        else:
            dropped.skip(f"contaminated: {hit['method']}", record["meta"]["id"])
            contamination.append({**hit, "sample": record["meta"]["id"]})
    ranked = sorted(clean, key=lambda r: difficulty(r, cfg.seed))
    kept = _verify_hardest(cfg, ranked, dropped)
    problems = [problem_record(r) for r in kept]
    write_jsonl(out / "problems.jsonl", problems)
    report = {
        "inputs": list(cfg.inputs),
        "records": len(records),
        "unreadable": skipped.counts,
        "verifiable": len(candidates),
        "clean": len(clean),
        "wanted": cfg.problem_count,
        "problems": len(problems),
        "target_pairs": cfg.target_pairs,
        "expected_pairs": round(len(problems) * cfg.expected_pair_rate),
        "tasks": dict(Counter(p["domain"] for p in problems)),
        "dropped": dropped.counts,
        "dropped_examples": dropped.examples,
        "contamination": contamination,
        "problems_file": str(out / "problems.jsonl"),
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", _report_md(report))
    if len(problems) < cfg.problem_count:
        print(
            f"dpo-problems: warning: {len(problems)} problems, {cfg.problem_count} wanted for "
            f"{cfg.target_pairs} pairs at a pair rate of {cfg.expected_pair_rate}: add SFT data",
            file=sys.stderr,
        )
    return report


def _report_md(report: dict[str, Any]) -> str:
    lines = ["# DPO problem set", "", "| step | count |", "|---|---|"]
    for key in ("records", "verifiable", "clean", "wanted", "problems", "target_pairs", "expected_pairs"):
        lines.append(f"| {key.replace('_', ' ')} | {report[key]} |")
    lines += ["", "| dropped | count |", "|---|---|"]
    for reason, count in sorted({**report["unreadable"], **report["dropped"]}.items()):
        lines.append(f"| {reason} | {count} |")
    if report["contamination"]:
        lines += ["", "| benchmark | item | method | sample |", "|---|---|---|---|"]
        for hit in report["contamination"]:
            lines.append(f"| {hit['benchmark']} | {hit['item_id']} | {hit['method']} | {hit['sample']} |")
    return "\n".join(lines) + "\n"


@command("infi data dpo-problems")
def main(argv: list[str] | None = None) -> int:
    cfg, dry_run = parse_stage_config(DPOProblemsConfig, "infi data dpo-problems", __doc__, argv)
    if dry_run:
        return 0
    report = build_problems(cfg)
    print(
        f"[dpo-problems] {report['problems']} problems ({report['tasks']}) for ~{report['target_pairs']} "
        f"pairs -> {report['problems_file']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
