"""The GPU benchmark scripts run end to end on CPU at toy size (their --smoke / tiny modes), so a
mistake in them shows up in CI rather than in the one GPU run they are written for."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernels_ops_smoke(tmp_path):
    out = tmp_path / "ops.jsonl"
    assert _load("kernels_ops").main(["--smoke", "--no-compile", "--iters", "1", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    measured = {(r["op"], r["impl"]) for r in records if "ms" in r}
    for op in ("rmsnorm", "swiglu", "rope", "ce"):
        assert {(op, "triton"), (op, "eager")} <= measured, op
    assert ("attention", "sdpa_gqa_auto") in measured


def test_kernels_model_and_summary_smoke(tmp_path):
    out = tmp_path / "model.jsonl"
    args = ["throughput", "--preset", "tiny", "--kernels", "torch", "--seq", "32", "--mb", "2"]
    args += ["--accum", "2", "--warmup", "1", "--steps", "1", "--out", str(out)]
    assert _load("kernels_model").main(args) == 0
    record = json.loads(out.read_text())
    assert record["tokens_per_s"] > 0 and len(record["losses"]) == 2
    # a row as benchmarks/train_throughput.py prints it
    row = {"label": "mcore-triton", "impl": "mcore", "mbs": 2, "gbs": 8, "step_s_median": 0.5}
    row.update(tokens_per_s=65536, mfu=0.5412, peak_mem_gib=30.1)
    (tmp_path / "throughput.jsonl").write_text(
        json.dumps(row) + "\n" + '{"label": "hf-liger", "error": "x"}\n'
    )
    text = _load("kernels_summary").summarise(tmp_path)
    assert "| mcore-triton | 65,536 | 54.1% | 30.1 | 0.5 | 2 x 4 |" in text
    assert "mcore kernels=torch" in text and (tmp_path / "summary.json").exists()
