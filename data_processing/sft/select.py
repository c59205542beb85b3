"""InfiAlign's SFT data selection: a large SFT pool -> a small, clean, diverse two-phase curriculum.

Four datatrove stages, each skipped when finished (completion markers under work/<stage>/):
  prepare  (N tasks)  read + convert -> language ID -> teacher CoT -> response tokens -> rule filters
                      -> LLM domain labels -> prompt embeddings -> decontamination   -> work/prepared/
  select   (1 task)   domain-balanced + cluster-uniform quotas, each filled with its longest
                      responses (difficulty), merged -> 20-gram near-duplicates     -> work/selected/
  quality  (N tasks)  format checks, math-verify, code sandbox, correction loop, LLM score -> work/verified/
  finalize (1 task)   phase1/phase2 curriculum + selection_report.md + PNGs + selection_stats.json
Decontamination runs in prepare (cheap per record) so that selection quotas are filled with clean
data; quality runs after selection because verification and corrections are the expensive part.

A stage that has to (re)run invalidates the stages after it. The resolved config is kept in the
output dir; rerunning with a different config fails unless `overwrite=true`.

input:
  inputs[*].path: a file, a dir or a glob of .jsonl, .jsonl.gz, .json (a list) or .parquet; each
  record in one of these formats (`format: auto` tells them apart by their keys):
    messages  {"messages": [{"role": "user", "content": "What is 2+3?"},
                            {"role": "assistant", "content": "2+3=5. \\\\boxed{5}"}]}
    sharegpt  {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}
    alpaca    {"instruction": "...", "input": "", "output": "..."}
    qa        {"question": "What is 2+3?", "solution": "2+3=5", "answer": "5"}
              (code: "tests" / "entry_point"; no solution: question only)
  malformed records are skipped and counted with their file:line
  decontamination.benchmarks: JSONL files of benchmark problems whose near-copies are dropped

output (under output_dir):
  phase1.jsonl, phase2.jsonl    the curriculum, canonical SFT records with selection scores in meta:
                                `infi sft`'s phases[*].data
      {"messages": [...], "meta": {"id": "...", "source": "...", "domain": "Algebra", ...}}
      (prompts rendered under the config's `prompt:` contract, recorded in meta.prompt_contract)
  selection_report.md, selection_stats.json, *.png    what each step kept and dropped
  config.yaml, work/<stage>/                           the resolved config, intermediates (resume)

example config: launch/configs/sft_data/demo.yaml (toy), infialign_select.yaml (paper scale)
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megatron_infi.config.core import ConfigError, dump_yaml, parse_stage_config, to_dict
from megatron_infi.config.inputs import InputCheck
from megatron_infi.data_processing.executor import ExecutorConfig, make_executor
from megatron_infi.data_processing.sft.config import SelectConfig, SynthesizeConfig
from megatron_infi.data_processing.sft.filters import RuleFilter
from megatron_infi.errors import RunError, command
from megatron_infi.generation.preflight import check_tokenizer
from megatron_infi.logs import quiet_logs
from megatron_infi.utils import atomic_write_json, atomic_write_text, set_run_caches

# Config fields that do not change results (how the work is spread, not what it computes).
VOLATILE = ("overwrite", "executor.workers", "executor.kind", "executor.slurm")


@dataclass
class Stage:
    name: str
    pipeline: list
    tasks: int
    outputs: list[Path]  # removed when an earlier stage reruns


def _drop_volatile(data: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    for dotted in VOLATILE:
        node, *rest = dotted.split(".")
        if rest:
            data.get(node, {}).pop(rest[0], None)
        else:
            data.pop(node, None)
    return data


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [prefix or "(root)"]


def check_run_dir(cfg: SelectConfig, out: Path, config_dict: dict[str, Any] | None = None) -> None:
    """Same config as the run already in `out` (then finished work is reused), or start over."""
    current = _drop_volatile(config_dict if config_dict is not None else to_dict(cfg))
    stamp = out / "work" / "config.json"
    if stamp.exists():
        changed = _diff(json.loads(stamp.read_text()), current)
        if changed and not cfg.overwrite:
            raise ConfigError(
                "output_dir",
                f"{out} holds a run with a different config (changed: {', '.join(changed[:6])}); "
                "pass overwrite=true to start over, or use another output_dir",
            )
        if changed:
            shutil.rmtree(out / "work")
    atomic_write_json(stamp, current)


def check_inputs(cfg: SelectConfig | SynthesizeConfig, dry_run: bool = False) -> InputCheck:
    """LLM dirs (tokenizer + a chat prompt under the contract), inputs and tokenizers exist and load,
    before any task starts; a dry run notes what does not exist yet. Shared by sft-synthesize."""
    from megatron_infi.data_processing.sft.formats import expand_paths

    check = InputCheck(dry_run)
    for name in ("llm", "evolver"):
        llm = getattr(cfg, name, None)
        if (
            llm is not None
            and llm.loads_model_dir
            and check.present(f"{name}.model", llm.model, model_dir=True)
        ):
            check_tokenizer(llm.model, f"{name}.model", cfg.prompt.render("1 + 1 = ?", "math"))
    for i, spec in enumerate(cfg.inputs):
        if not expand_paths(spec.path):
            check.absent(f"inputs[{i}].path", spec.path, "input (a file, dir or glob)")
    if isinstance(cfg, SelectConfig):
        for i, path in enumerate(cfg.decontamination.benchmarks):
            check.present(f"decontamination.benchmarks[{i}]", path)
        tokenizer = ("difficulty.tokenizer", cfg.difficulty.tokenizer)
    else:
        if cfg.rejection.reward_model:
            check.present("rejection.reward_model", cfg.rejection.reward_model, model_dir=True)
        tokenizer = ("tokenizer", cfg.tokenizer)
    if tokenizer[1] and check.present(*tokenizer, "tokenizer_dir"):
        check_tokenizer(tokenizer[1], tokenizer[0])
    return check


def build_stages(cfg: SelectConfig, out: Path, tokenizer_dir: str) -> list[Stage]:
    from megatron_infi.data_processing.sft import steps
    from megatron_infi.data_processing.sft.curriculum import FinalizeStep
    from megatron_infi.data_processing.sft.selection import SelectStep

    work = out / "work"
    rules = RuleFilter.from_config(cfg.filters)
    tasks = cfg.executor.tasks
    prepare = [steps.SFTReader(cfg.inputs), steps.LanguageStep(rules)]
    if cfg.cot.enabled:
        prepare.append(steps.CotStep(cfg.llm, cfg.cot.sampling, cfg.seed))
    prepare += [steps.TokenLengthStep(tokenizer_dir), steps.ResponseRulesStep(rules)]
    if cfg.diversity.labeller == "llm":
        d = cfg.diversity
        prepare.append(
            steps.DomainLabelStep(cfg.llm, d.domains, d.default_domain, d.label_sampling, cfg.seed)
        )
    prepare.append(steps.EmbedStep(cfg.diversity.encoder, cfg.diversity.encoder_max_tokens))
    dc = cfg.decontamination
    if dc.benchmarks and (dc.ngram or dc.embedding_threshold is not None):
        prepare.append(
            steps.DecontaminateStep(
                dc.benchmarks,
                dc.ngram,
                dc.embedding_threshold,
                cfg.diversity.encoder,
                cfg.diversity.encoder_max_tokens,
                str(work / "benchmarks"),
            )
        )
    prepare.append(steps.ShardWriter(str(work / "prepared"), with_embeddings=True))
    summary = {
        "inputs": [spec.path for spec in cfg.inputs],
        "benchmarks": list(dc.benchmarks),
        "config": str(out / "config.yaml"),
    }
    suffix = "parquet" if cfg.curriculum.format == "parquet" else "jsonl"
    return [
        Stage("prepare", prepare, tasks, [work / "prepared"]),
        Stage(
            "select",
            [
                SelectStep(
                    str(work / "prepared"), str(work / "selected"), cfg.diversity, cfg.difficulty, cfg.seed
                )
            ],
            1,
            [work / "selected"],
        ),
        Stage(
            "quality",
            [
                steps.JsonlShardReader(str(work / "selected" / "selected.jsonl")),
                steps.QualityStep(cfg.quality, rules, cfg.llm, cfg.seed),
                steps.ShardWriter(str(work / "verified")),
            ],
            tasks,
            [work / "verified"],
        ),
        Stage(
            "finalize",
            [FinalizeStep(str(work), str(out), cfg.curriculum, summary, cfg.prompt)],
            1,
            [
                out / f"phase1.{suffix}",
                out / f"phase2.{suffix}",
                out / "selection_report.md",
                out / "selection_stats.json",
            ],
        ),
    ]


def _complete(logging_dir: Path, tasks: int) -> bool:
    return all((logging_dir / "completions" / f"{rank:05d}").exists() for rank in range(tasks))


def run_stages(stages: list[Stage], ex: ExecutorConfig, work: Path) -> list[str]:
    """Run (local) or submit (slurm) the stages in order; returns the names of stages that ran."""
    stale = False
    for stage in stages:
        logging_dir = work / stage.name
        if stale:
            # an earlier stage will produce new data: this stage's finished tasks are out of date
            shutil.rmtree(logging_dir / "completions", ignore_errors=True)
            for path in stage.outputs:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        elif not _complete(logging_dir, stage.tasks):
            stale = True
    ran, depends = [], None
    for stage in stages:
        logging_dir = work / stage.name
        if _complete(logging_dir, stage.tasks):
            continue
        executor = make_executor(ex, stage.pipeline, stage.tasks, logging_dir, stage.name, depends)
        if ex.kind == "slurm":
            depends = executor  # submitted together, each array waiting on the one before
        else:
            start = time.perf_counter()
            executor.run()
            if not _complete(logging_dir, stage.tasks):
                raise RunError(f"stage {stage.name} did not complete; see {logging_dir}/logs")
            print(f"sft: stage {stage.name} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        ran.append(stage.name)
    if ex.kind == "slurm" and depends is not None:
        depends.run()
    return ran


def prepare_run(cfg: SelectConfig, config_dict: dict[str, Any] | None = None) -> tuple[Path, str]:
    """Checks + run dir + tokenizer + cached benchmark embeddings, before any task starts."""
    check_inputs(cfg)
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    set_run_caches(out)
    check_run_dir(cfg, out, config_dict)
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    if cfg.difficulty.tokenizer:
        tokenizer_dir = str(Path(cfg.difficulty.tokenizer).resolve())
    else:
        from megatron_infi.data.tokenizer import build_llama3_tokenizer

        tokenizer_dir = str(build_llama3_tokenizer(out / "tokenizer"))
    dc = cfg.decontamination
    if (
        dc.benchmarks
        and dc.embedding_threshold is not None
        and not (out / "work" / "benchmarks.npy").exists()
    ):
        from megatron_infi.data_processing.sft.decontaminate import BenchmarkSet
        from megatron_infi.data_processing.sft.steps import get_encoder

        encoder = get_encoder(cfg.diversity.encoder, cfg.diversity.encoder_max_tokens)
        BenchmarkSet.build(
            dc.benchmarks, dc.ngram, dc.embedding_threshold, encoder, out / "work" / "benchmarks"
        )
    return out, tokenizer_dir


def run_select(cfg: SelectConfig) -> Path:
    """Run the whole selection; returns the report path (local executor) or the output dir (slurm)."""
    out, tokenizer_dir = prepare_run(cfg)
    stages = build_stages(cfg, out, tokenizer_dir)
    ran = run_stages(stages, cfg.executor, out / "work")
    print(f"sft-select: ran {', '.join(ran) or 'nothing (all stages finished before)'}", file=sys.stderr)
    return out / "selection_report.md" if cfg.executor.kind == "local" else out


@command("infi data sft-select")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    cfg, dry_run = parse_stage_config(SelectConfig, "infi data sft-select", __doc__, argv)
    if dry_run:
        check_inputs(cfg, dry_run=True).print_notes("sft-select")
        return 0
    print(run_select(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
