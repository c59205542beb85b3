"""results.md (a table shaped like the papers': models as rows, benchmarks as columns, plus Avg) and
results.png (grouped bars), from the scores in results.json."""

from __future__ import annotations

from pathlib import Path

from megatron_infi.plots import label_axes, pyplot, save_figure
from megatron_infi.utils import atomic_write_text


def headline_metric(summary: dict) -> str | None:
    """The table's number for one benchmark: avg@n (accuracy averaged over n samples)."""
    return next((key for key in summary if key.startswith("avg@")), None)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def render_markdown(results: dict) -> str:
    models, benchmarks, scores = results["models"], results["benchmarks"], results["scores"]
    titles = [benchmarks[b]["title"] for b in benchmarks]
    lines = [
        "# Evaluation results",
        "",
        "Accuracy in % (avg@n: mean over n samples per problem; greedy few-shot has n = 1).",
        "",
        "| Model | Mode | " + " | ".join(titles) + " | Avg |",
        "|---|---|" + "---:|" * (len(titles) + 1),
    ]
    for name, model in models.items():
        row, values = [], []
        for bench in benchmarks:
            summary = scores.get(name, {}).get(bench)
            metric = headline_metric(summary) if summary else None
            value = summary[metric] if metric else None
            row.append(_fmt(value))
            if value is not None:
                values.append(value)
        mode = "few-shot" if model["mode"] == "fewshot" else "zero-shot chat"
        avg = sum(values) / len(values) if values and len(values) == len(benchmarks) else None
        lines.append(f"| {name} | {mode} | " + " | ".join(row) + f" | {_fmt(avg)} |")

    lines += [
        "",
        "## Details",
        "",
        "| Model | Benchmark | Problems | Samples | Metrics | No answer | Code statuses |",
    ]
    lines.append("|---|---|---:|---:|---|---:|---|")
    for name in models:
        for bench, meta in benchmarks.items():
            summary = scores.get(name, {}).get(bench)
            if not summary:
                continue
            metrics = ", ".join(f"{k} {v:.2f}" for k, v in summary.items() if "@" in k)
            statuses = summary.get("statuses", {})
            code = (
                ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) if meta["kind"] == "code" else ""
            )
            lines.append(
                f"| {name} | {meta['title']} | {summary['problems']} | {summary['samples']} | {metrics} "
                f"| {statuses.get('no-answer', 0)} | {code} |"
            )
    notes = [
        f"- {meta['title']}: {meta['skipped_total']} records skipped ({meta['skipped']})"
        for meta in benchmarks.values()
        if meta.get("skipped_total")
    ]
    if notes:
        lines += ["", "## Skipped records", "", *notes]
    return "\n".join(lines) + "\n"


def render_chart(results: dict, path: Path) -> None:
    models, benchmarks, scores = list(results["models"]), results["benchmarks"], results["scores"]
    width = 0.8 / max(1, len(models))
    fig, ax = pyplot().subplots(figsize=(max(6.0, 1.6 * len(benchmarks) + 2), 4.2))
    for i, name in enumerate(models):
        values = []
        for bench in benchmarks:
            summary = scores.get(name, {}).get(bench)
            metric = headline_metric(summary) if summary else None
            values.append(summary[metric] if metric else 0.0)
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(benchmarks))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(benchmarks)), [meta["title"] for meta in benchmarks.values()], fontsize=8)
    label_axes(ax, "benchmark", "accuracy (%)", "Evaluation (avg@n)")
    ax.set_ylim(0, 115)  # headroom for the legend above 100 %
    ax.legend(fontsize=8, ncol=len(models), loc="upper center")
    save_figure(fig, path, dpi=120)


def write_reports(results: dict, out_dir: Path) -> None:
    atomic_write_text(out_dir / "results.md", render_markdown(results))
    render_chart(results, out_dir / "results.png")
