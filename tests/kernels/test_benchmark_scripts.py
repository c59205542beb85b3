"""The GPU benchmark scripts run end to end on CPU at toy size (their --smoke / tiny modes), so a
mistake in them shows up in CI rather than in the one GPU run they are written for: the parity
criterion, the resolved-fusions report, and gpu_kernels.sh on a box without pytest."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_parity_verdict_judges_step0_tightly_and_the_curve_on_average():
    verdict = _load("kernels_model").parity_verdict
    torch_curve = [11.9, 9.0, 7.5, 6.8, 6.2]
    norms = {"torch": [2.0, 1.0, 1.0, 1.0, 1.0], "triton": [2.01, 1.3, 0.8, 1.0, 1.0]}
    args = dict(step0_loss_tol=0.01, step0_grad_norm_rtol=0.02, mean_tol=0.05)
    # one step off by 0.2 (bf16 training diverging for a step), the curve the same on average
    spike = {"torch": torch_curve, "triton": [11.905, 9.2, 7.5, 6.8, 6.2]}
    assert verdict(spike, norms, **args)["ok"]
    # a kernel bug shows in the first step, from identical weights and batch
    assert not verdict({"torch": torch_curve, "triton": [11.95, *torch_curve[1:]]}, norms, **args)["ok"]
    bad_norm = {"torch": norms["torch"], "triton": [2.1, *norms["triton"][1:]]}
    assert not verdict(spike, bad_norm, **args)["ok"]
    # a systematic offset, and a model that does not learn
    assert not verdict(
        {"torch": torch_curve, "triton": [11.9] + [x + 0.1 for x in torch_curve[1:]]}, norms, **args
    )["ok"]
    assert not verdict({"torch": [11.9] * 5, "triton": [11.9] * 5}, norms, **args)["ok"]


def test_resolved_fusions_names_every_backend(capsys):
    assert _load("resolved_fusions").main(["--preset", "tiny"]) == 0
    rows = {r["kernels"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert sorted(rows) == ["auto", "te", "torch", "triton"]
    assert rows["torch"]["backend"] == "torch" and rows["torch"]["optimizer_impl"] == "torch"
    assert rows["torch"]["apply_rope_fusion"] is False
    assert rows["te"]["unavailable"].startswith("model.kernels")  # no Transformer Engine on CPU


def _bare_python(tmp_path: Path) -> Path:
    """The project's python on a box without pytest: `import pytest` fails."""
    shadow = tmp_path / "no_pytest"
    shadow.mkdir()
    (shadow / "pytest.py").write_text("raise ImportError('pytest is not installed here')\n")
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{shadow}:$PYTHONPATH" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.slow
def test_gpu_kernels_script_falls_back_to_the_selfcheck_without_pytest(tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": str(_bare_python(tmp_path)),
        "PARTS": "env correctness summary",
        "TRITON_CACHE_DIR": str(tmp_path / "triton"),
        "PYTHONPATH": "",
    }
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_kernels.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the kernels' self-check gives the correctness verdict" in proc.stdout
    report = json.loads((out / "kernels_selfcheck.json").read_text())
    assert report["ops"] and all(r["ok"] for r in report["ops"].values())
    assert "kernel self-check: 8 of 8 ok" in (out / "summary.md").read_text()
    assert f"TRITON_CACHE_DIR={tmp_path / 'triton'}" in (out / "env.txt").read_text()
    fusions = [json.loads(line) for line in (out / "fusions.jsonl").read_text().splitlines()]
    assert [r["kernels"] for r in fusions] == ["auto", "te", "triton", "torch"]
