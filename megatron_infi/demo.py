"""`make demo`: the whole pipeline at toy scale on CPU, on bundled real data, under runs/demo/.

    python -m megatron_infi.demo [--out runs/demo] [--fresh] [--only STAGE ...]

Each stage runs the same entry point a user runs (training under torchrun, gloo), writes its
artifacts under the demo dir and a `<stage>/.done.json` record; re-running skips finished stages,
so an interrupted demo picks up where it stopped. It ends with a summary table and exits non-zero
if a check fails (e.g. the pretraining loss not ending well below the corpus's unigram entropy).
"""

from __future__ import annotations

import argparse
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

from megatron_infi.utils import atomic_write_json, set_run_caches

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "launch" / "configs" / "demo"


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
    from data_processing.demo import run as run_data

    manifest_path = run_data(demo.path("data"))
    manifest = json.loads(Path(manifest_path).read_text())
    return {
        "artifact": str(Path(manifest_path).parent),
        "tokenizer": str(Path(manifest["tokenizer"]["path"])),
        "summary": f"{manifest['documents']:,} docs, {manifest['tokens']:,} tokens",
    }


def _train_stage(demo: Demo, name: str, overrides: list[str]) -> dict:
    data = demo.results["data"]
    run_dir = demo.path(name)
    args = [
        "--config",
        str(CONFIGS / f"{name}.yaml"),
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
    last = max(train)
    tail = [train[i] for i in sorted(train)[-10:]]
    final = sum(tail) / len(tail)
    result = {
        "artifact": str(run_dir / "checkpoints"),
        "first_loss": train[min(train)],
        "final_loss": final,
        "valid_loss": valid[max(valid)] if valid else None,
        "unigram_entropy": entropy,
        "iterations": last,
        "summary": f"loss {train[min(train)]:.2f} -> {final:.2f} (unigram entropy {entropy:.2f})",
    }
    if final > entropy - 0.5:
        raise DemoCheckFailed(
            f"{name}: final loss {final:.3f} is not well below the unigram entropy {entropy:.3f}"
        )
    return result


def stage_pretrain(demo: Demo) -> dict:
    return _train_stage(demo, "pretrain", [])


def stage_anneal(demo: Demo) -> dict:
    return _train_stage(demo, "anneal", [f"checkpoint.load={demo.results['pretrain']['artifact']}"])


STAGES: list[tuple[str, Callable[[Demo], dict]]] = [
    ("data", stage_data),
    ("pretrain", stage_pretrain),
    ("anneal", stage_anneal),
]


def _print_summary(demo: Demo, timings: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"megatron-infi demo ({demo.root})")
    for column in ("stage", "seconds", "result", "artifact"):
        table.add_column(column)
    for name, _ in STAGES:
        result = demo.results.get(name, {})
        table.add_row(
            name, f"{timings.get(name, 0):.0f}", result.get("summary", "-"), result.get("artifact", "-")
        )
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--fresh", action="store_true", help="delete the demo dir first")
    parser.add_argument("--only", nargs="*", help="run only these stages (earlier ones must be done)")
    args = parser.parse_args(argv)
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
            print(f"stage {name}: not done and not selected", file=sys.stderr)
            return 1
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
    print(
        f"\nDemo finished. Checkpoints: {demo.results['anneal']['artifact']} (anneal), "
        f"{demo.results['pretrain']['artifact']} (pretrain); summary: {root / 'summary.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
