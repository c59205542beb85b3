"""InfiR's SFT data synthesis: seed instructions -> evolved instructions with verified teacher responses.

  synthesize (N tasks)  seed instructions -> Evol-Instruct rounds (in-depth / in-breadth, through the
                        evolver LLM) -> n teacher responses each -> rejection sampling (rules,
                        math-verify, code sandbox, reward model best-of-n) -> domain labels
                        -> response tokens                                        -> work/synthesized/
  finalize   (1 task)   synthesized.jsonl (or .parquet) + synthesis_report.md + synthesis_stats.json
Every record carries meta: quality_score (reward), difficulty (1 - pass rate of its candidates),
pass_rate, candidates, domain, evolution (the operations applied), parent / root ids, and
prompt_contract: the teacher is asked, and the record written, with the prompt rendered under the
config's prompt contract (`prompt:`, the one SFT, DPO pairs and eval use).
Same resume rules as sft-select (completion markers, stale stages, config stamp).

input:
  llm.model (the teacher; `evolver` rewrites instructions, default: the teacher): an HF model dir,
  or a served model with `llm.base_url`
  inputs[*].path: the seed instructions, in any format `infi data sft-select` reads (messages,
  sharegpt, alpaca, qa: see its --help); only the instruction is used, responses are ignored:
    {"question": "Write a Python function that reverses a string."}

output (under output_dir):
  synthesized.jsonl (or .parquet)   canonical SFT records, meta: quality_score, difficulty, pass_rate,
                                    domain, evolution, parent / root ids, prompt_contract: `infi sft`'s data
  synthesis_report.md, synthesis_stats.json, config.yaml, work/<stage>/

example config: launch/configs/sft_data/demo_synthesize.yaml (toy), infir_synthesize.yaml
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from megatron_infi.config.core import dump_yaml, parse_stage_config
from megatron_infi.config.prompt import PromptContract
from megatron_infi.data_processing.sft import steps
from megatron_infi.data_processing.sft.config import EvolutionConfig, RejectionConfig, SynthesizeConfig
from megatron_infi.data_processing.sft.curriculum import merge_shard_stats, write_records
from megatron_infi.data_processing.sft.filters import RuleFilter
from megatron_infi.data_processing.sft.records import under_contract
from megatron_infi.data_processing.sft.select import Stage, check_inputs, check_run_dir, run_stages
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs
from megatron_infi.utils import atomic_write_json, atomic_write_text, set_run_caches


@lru_cache(maxsize=2)
def get_reward_model(path: str, batch_size: int):
    from megatron_infi.data_processing.sft.reward import RewardModel

    return RewardModel(path, batch_size=batch_size)


class EvolveStep(PipelineStep):
    """Seeds in, seeds (if kept) + their evolved descendants out; failed rewrites are dropped docs."""

    name = "evolve instructions"
    type = "🧬 - EVOLVE"

    def __init__(self, llm, cfg: EvolutionConfig, seed: int, batch_size: int = 256):
        super().__init__()
        self.llm, self.cfg, self.seed, self.batch_size = steps.llm_key(llm), cfg, seed, batch_size

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from megatron_infi.data_processing.sft.evolve import evolve

        for batch in batched(data, self.batch_size):
            seeds = [d for d in batch if steps.live(d)]
            for doc in seeds:  # a seed is an instruction: any response it came with is not used
                record = doc.metadata["record"]
                if record["messages"][-1]["role"] == "assistant":
                    doc.metadata["record"] = {"messages": record["messages"][:-1], "meta": record["meta"]}
            yield from (d for d in batch if not steps.live(d))
            if self.cfg.keep_seeds:
                yield from seeds
            if not seeds or not self.cfg.rounds:
                continue
            evolved, failed = evolve(
                steps.get_backend(self.llm), [d.metadata["record"] for d in seeds], self.cfg, self.seed
            )
            self.stat_update("evolved", value=len(evolved))
            for record, reason in failed:
                self.stat_update(reason)
                doc = steps.record_doc(record)
                steps.drop(doc, reason)
                yield doc
            yield from (steps.record_doc(r) for r in evolved)


class RespondStep(steps.RecordStep):
    """n teacher responses per instruction (its prompt rendered under the contract), then best-of-n
    rejection sampling."""

    name = "teacher + rejection"
    type = "🤖 - LLM"
    batch_size = 128

    def __init__(self, llm, contract: PromptContract, cfg: RejectionConfig, rules: RuleFilter, seed: int):
        super().__init__()
        self.llm, self.contract, self.cfg = steps.llm_key(llm), contract, cfg
        self.rules, self.seed = rules, seed

    def process(self, docs, rank):
        from megatron_infi.data_processing.sft.evolve import reject
        from megatron_infi.data_processing.sft.llm import chat

        records = [under_contract(d.metadata["record"], self.contract) for d in docs]
        candidates = chat(
            steps.get_backend(self.llm),
            [r["messages"] for r in records],
            self.cfg.sampling,
            self.seed,
            n=self.cfg.samples,
            desc="teacher",
        )
        reward = (
            get_reward_model(self.cfg.reward_model, self.cfg.reward_batch_size)
            if self.cfg.reward_model
            else None
        )
        kept, dropped = reject(records, candidates, self.cfg, self.rules, reward)
        by_id = {id(r): d for r, d in zip(records, docs, strict=True)}
        kept_by_parent = {r["meta"]["id"]: r for r in kept}
        for record, doc in zip(records, docs, strict=True):
            if record["meta"]["id"] in kept_by_parent:
                doc.metadata["record"] = kept_by_parent[record["meta"]["id"]]
        for record, reason in dropped:
            steps.drop(by_id[id(record)], reason)


class SynthFinalizeStep(PipelineStep):
    name = "merge + report"
    type = "📝 - REPORT"

    def __init__(self, work: str, output_dir: str, fmt: str, inputs: list[str], contract: PromptContract):
        super().__init__()
        self.work, self.output_dir, self.fmt, self.inputs = work, output_dir, fmt, inputs
        self.contract = contract

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        finalize_synthesis(Path(self.work), Path(self.output_dir), self.fmt, self.inputs, self.contract)
        return iter(())


def finalize_synthesis(
    work: Path, out: Path, fmt: str, inputs: list[str], contract: PromptContract
) -> dict[str, Any]:
    records = []
    for shard in steps.iter_shards(work / "synthesized"):
        records.extend(
            json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines() if line.strip()
        )
    records.sort(key=lambda r: r["meta"]["id"])
    suffix = "parquet" if fmt == "parquet" else "jsonl"
    write_records(out / f"synthesized.{suffix}", records, fmt)
    shard_stats = merge_shard_stats(work / "synthesized")
    evolved = [r for r in records if r["meta"].get("evolution")]
    stats = {
        "inputs": inputs,
        "prompt_contract": contract.to_dict(),
        "kept": len(records),
        "evolved_kept": len(evolved),
        "seeds_kept": len(records) - len(evolved),
        "dropped": shard_stats["dropped"],
        "examples": shard_stats["examples"],
        "operations": dict(Counter(op for r in evolved for op in r["meta"]["evolution"])),
        "domains": dict(Counter(r["meta"].get("domain") for r in records)),
        "mean_pass_rate": round(sum(r["meta"]["pass_rate"] for r in records) / len(records), 4)
        if records
        else None,
    }
    atomic_write_json(out / "synthesis_stats.json", stats)
    lines = ["# SFT data synthesis report (InfiR)", "", f"Seeds: {', '.join(inputs)}", ""]
    lines += [
        "| outcome | count |",
        "|---|---|",
        f"| kept (seeds) | {stats['seeds_kept']} |",
        f"| kept (evolved) | {stats['evolved_kept']} |",
    ]
    lines += [
        f"| {reason} | {count} |" for reason, count in sorted(stats["dropped"].items(), key=lambda kv: -kv[1])
    ]
    lines += [
        "",
        f"Evolution operations of kept records: {stats['operations'] or '-'}",
        f"Domains: {stats['domains'] or '-'}",
    ]
    lines += [f"Mean pass rate of teacher candidates (kept records): {stats['mean_pass_rate']}", ""]
    atomic_write_text(out / "synthesis_report.md", "\n".join(lines))
    return stats


def build_stages(cfg: SynthesizeConfig, out: Path, tokenizer_dir: str) -> list[Stage]:
    work = out / "work"
    rules = RuleFilter.from_config(cfg.filters)
    pipeline = [steps.SFTReader(cfg.inputs)]
    if cfg.filters.languages:
        pipeline.append(steps.LanguageStep(rules))
    pipeline += [
        EvolveStep(cfg.evolver or cfg.llm, cfg.evolution, cfg.seed),
        RespondStep(cfg.llm, cfg.prompt, cfg.rejection, rules, cfg.seed),
    ]
    if cfg.labeller == "llm":
        pipeline.append(
            steps.DomainLabelStep(cfg.llm, cfg.domains, cfg.default_domain, cfg.label_sampling, cfg.seed)
        )
    pipeline += [steps.TokenLengthStep(tokenizer_dir), steps.ShardWriter(str(work / "synthesized"))]
    suffix = "parquet" if cfg.format == "parquet" else "jsonl"
    return [
        Stage("synthesize", pipeline, cfg.executor.tasks, [work / "synthesized"]),
        Stage(
            "finalize",
            [SynthFinalizeStep(str(work), str(out), cfg.format, [s.path for s in cfg.inputs], cfg.prompt)],
            1,
            [out / f"synthesized.{suffix}", out / "synthesis_report.md", out / "synthesis_stats.json"],
        ),
    ]


def run_synthesize(cfg: SynthesizeConfig) -> Path:
    check_inputs(cfg)
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    set_run_caches(out)
    check_run_dir(cfg, out)
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    if cfg.tokenizer:
        tokenizer_dir = str(Path(cfg.tokenizer).resolve())
    else:
        from megatron_infi.data.tokenizer import build_llama3_tokenizer

        tokenizer_dir = str(build_llama3_tokenizer(out / "tokenizer"))
    ran = run_stages(build_stages(cfg, out, tokenizer_dir), cfg.executor, out / "work")
    print(f"sft-synthesize: ran {', '.join(ran) or 'nothing (all stages finished before)'}", file=sys.stderr)
    return out / "synthesis_report.md"


@command("infi data sft-synthesize")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    cfg, dry_run = parse_stage_config(SynthesizeConfig, "infi data sft-synthesize", __doc__, argv)
    if dry_run:
        check_inputs(cfg, dry_run=True).print_notes("sft-synthesize")
        return 0
    print(run_synthesize(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
