"""The real SmolLM2-135M-Instruct on this CPU: CPT tokens/s (fp32 vs bf16), generation tokens/s of the
eval's backend, and the demo's real-model stages (wall time, eval table) from runs/demo/summary.json.

    python benchmarks/real_model.py cpt --precision fp32 [--nproc 2] [--steps 4]   # one JSON line
    python benchmarks/real_model.py cpt --precision bf16
    python benchmarks/real_model.py generate [--prompts 64] [--max-new-tokens 64] [--dtype float32]
    python benchmarks/real_model.py demo [runs/demo/summary.json]                  # a markdown table

`cpt` runs the demo's CPT config (launch/configs/demo/cpt.yaml: PP=2, seq 128, global batch 8) through
torchrun on the PubMedQA corpus and reports the trainer's own tokens/s, first step excluded.
`generate` times greedy chat generation of the held-out arithmetic prompts through the eval's HF backend.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_cpt(precision: str, nproc: int, steps: int, work: Path) -> dict:
    from megatron_infi.demo import real_cpt

    hf, ckpt = real_cpt.convert_smollm2(work / "smollm2-mcore")
    prefix = real_cpt.write_domain_corpus(work / "corpus", ckpt / "tokenizer")
    run_dir = work / f"run-{precision}-{nproc}"
    extra = {
        "train.precision": precision,
        "train.train_iters": steps,
        "train.eval_at_start": False,
        "train.eval_interval": 0,
        "parallel.pipeline": nproc,
    }
    args = real_cpt.cpt_overrides(ckpt, prefix, run_dir, extra)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // nproc)),
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    proc = subprocess.run(
        [*cmd, "-m", "megatron_infi.train", *args],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    # the trainer's console line per step: "... | tokens/s 1,234"; the first step includes warm-up
    rates = [float(m.replace(",", "")) for m in re.findall(r"tokens/s ([\d,]+)", proc.stdout)][1:]
    return {
        "what": "cpt",
        "precision": precision,
        "nproc": nproc,
        "steps": steps,
        "tokens_per_s": statistics.median(rates),
    }


def bench_generate(prompts: int, max_new_tokens: int, dtype: str) -> dict:
    from megatron_infi import assets
    from megatron_infi.demo.real_posttrain import HELD_OUT, task_messages
    from megatron_infi.evaluation.benchmarks import load_benchmark
    from megatron_infi.generation import GenerationConfig, SamplingParams, build_backend

    problems, _ = load_benchmark("arithmetic", None, HELD_OUT)
    conversations = [task_messages(p) for p in problems[:prompts]]
    backend = build_backend(
        GenerationConfig(backend="hf", model=str(assets.smollm2_dir()), batch_size=prompts, dtype=dtype)
    )
    start, cpu = time.perf_counter(), time.process_time()
    outputs = backend.chat(conversations, SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    tokens = sum(len(backend.tokenizer.encode(o[0], add_special_tokens=False)) for o in outputs)
    return {
        "what": "generate",
        "dtype": dtype,
        "prompts": len(conversations),
        "new_tokens": tokens,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "tokens_per_s": round(tokens / wall, 1),
    }


def demo_table(summary_path: Path) -> str:
    summary = json.loads(summary_path.read_text())
    stages = summary["stages"]
    lines = ["| stage | seconds | result |", "|---|---:|---|"]
    for name in ("cpt", "real_sft_data", "real_sft", "real_dpo_pairs", "real_dpo", "real_eval"):
        if name in stages:
            lines.append(f"| {name} | {stages[name]['seconds']:.0f} | {stages[name].get('summary', '')} |")
    real = summary.get("real_model")
    if real:
        lines += ["", "| stage | accuracy % | 95% interval | n |", "|---|---:|---|---:|"]
        for name, row in real["eval"].items():
            lines.append(
                f"| {name} | {row['acc']:.1f} | [{row['ci95'][0]:.1f}, {row['ci95'][1]:.1f}] | {row['n']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    cpt = sub.add_parser("cpt")
    cpt.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    cpt.add_argument("--nproc", type=int, default=2, help="processes = pipeline stages")
    cpt.add_argument("--steps", type=int, default=4)
    cpt.add_argument("--work", default=None, help="work dir (default: a temp dir)")
    gen = sub.add_parser("generate")
    gen.add_argument("--prompts", type=int, default=64)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    demo = sub.add_parser("demo")
    demo.add_argument("summary", nargs="?", default=str(REPO / "runs" / "demo" / "summary.json"))
    args = parser.parse_args(argv)
    if args.what == "cpt":
        with tempfile.TemporaryDirectory(prefix="bench-cpt-") as tmp:
            print(json.dumps(bench_cpt(args.precision, args.nproc, args.steps, Path(args.work or tmp))))
    elif args.what == "generate":
        print(json.dumps(bench_generate(args.prompts, args.max_new_tokens, args.dtype)))
    else:
        print(demo_table(Path(args.summary)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
