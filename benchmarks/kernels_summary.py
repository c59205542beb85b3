"""Summarise a `benchmarks/gpu_kernels.sh` results dir: print the tables, write summary.md and
summary.json beside the inputs, and kernels.png.

    python benchmarks/kernels_summary.py RESULTS_DIR
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def model_label(r: dict) -> str:
    if r.get("system") == "hf":
        return "HF + Liger" if r.get("liger") else "HF (SDPA)"
    extra = "" if r.get("recompute", "none") == "none" else f", recompute={r['recompute']}"
    extra += ", wgrad fusion" if r.get("wgrad_fusion") else ""
    extra += f", AdamW {r['optimizer_impl']}" if r.get("optimizer_impl") else ""
    return f"mcore kernels={r.get('kernels')}, mb={r.get('mb')}{extra}"


def tests_line(path: Path) -> str:
    if not path.exists():
        return "gpu tests: no report"
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    get = lambda k: int(suite.get(k, 0))  # noqa: E731
    failed = [
        case.get("name")
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    line = (
        f"gpu tests: {get('tests')} run, {get('failures') + get('errors')} failed, {get('skipped')} skipped"
    )
    return line + (f" ({', '.join(failed)})" if failed else "")


def selfcheck_line(out: Path) -> str:
    """The correctness verdict of `python -m megatron_infi.kernels.selfcheck` (run where pytest is not)."""
    path = out / "kernels_selfcheck.json"
    if not path.exists():
        return "kernel self-check: not run"
    ops = json.loads(path.read_text()).get("ops", {})
    failed = [name for name, r in ops.items() if not r.get("ok")]
    return f"kernel self-check: {len(ops) - len(failed)} of {len(ops)} ok" + (
        f" (failed: {', '.join(failed)})" if failed else ""
    )


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def summarise(out: Path) -> str:
    trainer_rows = read_jsonl(out / "throughput.jsonl")
    model = read_jsonl(out / "model.jsonl")
    ops = read_jsonl(out / "kernels_ops.jsonl")
    parity = read_jsonl(out / "parity.jsonl")
    lines = ["# Kernels on the GPU", "", tests_line(out / "tests.xml"), selfcheck_line(out)]
    lines += [f"resolved: {line}" for line in read_lines(out / "fusions.jsonl")]
    for p in parity:
        tol = p.get("tolerances", {})
        lines.append(
            f"loss-curve parity ({p.get('steps')} steps, triton vs torch): "
            f"{'ok' if p.get('ok') else 'FAILED'}; step 0 |loss diff| {p.get('step0_loss_abs')} "
            f"(<= {tol.get('step0_loss_abs')}), grad norm {p.get('step0_grad_norm_rel')} relative "
            f"(<= {tol.get('step0_grad_norm_rel')}); mean |diff| {p.get('mean_abs_diff')} "
            f"(<= {tol.get('mean_abs_diff')}), max {p.get('max_abs_diff')}; "
            f"loss {p.get('triton', ['?'])[0]} -> {p.get('triton', ['?'])[-1]}"
        )
    lines += ["", "## Whole model: llama3.2-1b, seq 4096 (benchmarks/train_throughput.py)", ""]
    lines += [
        "| config | tokens/s | MFU | peak GiB | step s | micro-batch x steps |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in trainer_rows:
        if "error" in r:
            lines.append(f"| {r.get('label')} | {r['error'][:80]} | | | | |")
            continue
        lines.append(
            f"| {r['label']} | {r['tokens_per_s']:,} | {100 * r['mfu']:.1f}% | {r['peak_mem_gib']} | "
            f"{r['step_s_median']} | {r['mbs']} x {r['gbs'] // r['mbs']} |"
        )
    lines += ["", "## Ablations (benchmarks/kernels_model.py, the trainer's pieces)", ""]
    lines += ["| system | tokens/s | MFU | peak GiB | note |", "|---|---:|---:|---:|---|"]
    for r in model:
        if r.get("mode") != "throughput":
            continue
        if "error" in r:
            lines.append(f"| {model_label(r)} | - | - | - | {r['error'][:80]} |")
        else:
            lines.append(
                f"| {model_label(r)} | {r['tokens_per_s']:,} | {100 * r['mfu']:.1f}% | {r['peak_mem_gib']} | "
                f"step {r['step_s']} s |"
            )
    copy = next((r["gbs"] for r in ops if r.get("op") == "copy"), None)
    lines += ["", f"## Per kernel, forward + backward (copy bandwidth {copy} GB/s)", ""]
    lines += [
        "| op | impl | ms | GB/s | of copy | TFLOP/s | peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in ops:
        if r.get("op") == "copy":
            continue
        if "error" in r:
            lines.append(f"| {r['op']} | {r['impl']} | {r['error'][:60]} | | | | |")
            continue
        cells = [r.get(k, "") for k in ("ms", "gbs", "of_copy", "tflops", "peak_mib")]
        lines.append(f"| {r['op']} | {r['impl']} | " + " | ".join(str(c) for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    summary = {"trainer": trainer_rows, "ablations": model, "ops": ops, "parity": parity}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(out, trainer_rows, parity)
    return text


def plot(out: Path, model: list[dict], parity: list[dict]) -> None:
    from megatron_infi.plots import label_axes, pyplot, save_figure

    rows = [r for r in model if "tokens_per_s" in r]
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4))
    axes[0].barh([r["label"] for r in rows], [r["tokens_per_s"] for r in rows])
    label_axes(axes[0], "tokens/s (llama3.2-1b, seq 4096, 1 GPU)", "kernel configuration")
    for p in parity[-1:]:
        axes[1].plot(p["torch"], label="kernels=torch")
        axes[1].plot(p["triton"], label="kernels=triton", linestyle="--")
        axes[1].legend()
    label_axes(axes[1], "step", "loss", "loss with torch vs Triton kernels")
    save_figure(fig, out / "kernels.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(summarise(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
