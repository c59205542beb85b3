"""Every PNG the project writes has labelled axes with tick labels: each plot function is rendered on
small inputs and every axes of the figure is inspected as it is saved (matplotlib Agg)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _kernels_plot(out: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "kernels_summary", REPO / "benchmarks" / "kernels_summary.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    rows = [{"label": "mcore-triton", "tokens_per_s": 41000.0}, {"label": "hf-sdpa", "tokens_per_s": 30000.0}]
    module.plot(out, rows, [{"torch": [2.3, 2.1, 2.0], "triton": [2.3, 2.1, 2.0]}])


def _funnel(out: Path) -> None:
    from megatron_infi.data_processing.pipelines.report import plot_funnel

    # counts within one decade: a log axis with ticks at decades only had no tick labels here
    funnel = {
        "read": {"web": {"documents": 640, "tokens": 310_000}, "math": {"documents": 300, "tokens": 200_000}},
        "filter": {
            "web": {"documents": 420, "tokens": 250_000},
            "math": {"documents": 250, "tokens": 150_000},
        },
        "dedup": {
            "web": {"documents": 400, "tokens": 240_000},
            "math": {"documents": 230, "tokens": 140_000},
        },
    }
    plot_funnel(funnel, out / "funnel.png")


def _selection(out: Path) -> None:
    from megatron_infi.data_processing.sft.report import bar_pair, length_histogram

    bar_pair(out / "domains.png", "domains", {"Algebra": 40, "Geometry": 12}, {"Algebra": 10}, "domain")
    length_histogram(out / "lengths.png", {"pool": np.array([10, 200, 450]), "phase 1": np.array([10, 200])})


def _pass_rates(out: Path) -> None:
    from megatron_infi.posttrain.dpo_pairs import plot_pass_rates

    plot_pass_rates([0.0, 0.25, 1.0, 0.5], 4, out / "pass_rate.png")


def _loss(out: Path) -> None:
    from megatron_infi.posttrain.common import plot_curves

    plot_curves(
        {"phase1": [(1, 2.0), (2, 1.5)], "phase2": [(1, 1.4), (2, 1.2)]}, out / "loss.png", "SFT", "loss"
    )


def _eval_chart(out: Path) -> None:
    from megatron_infi.evaluation.report import render_chart

    results = {
        "models": {"sft": {}, "dpo": {}},
        "benchmarks": {"gsm8k": {"title": "GSM8K"}, "math500": {"title": "MATH500"}},
        "scores": {
            "sft": {"gsm8k": {"avg@4": 40.0}, "math500": {"avg@4": 20.0}},
            "dpo": {"gsm8k": {"avg@4": 45.0}},
        },
    }
    render_chart(results, out / "results.png")


PLOTS = {
    "data funnel": _funnel,
    "SFT selection report": _selection,
    "DPO pass rates": _pass_rates,
    "SFT / DPO loss": _loss,
    "eval chart": _eval_chart,
    "kernel benchmark": _kernels_plot,
}


@pytest.mark.parametrize("name", list(PLOTS))
def test_every_axes_has_labels_and_tick_labels(name, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    problems, saved = [], []
    real_savefig = Figure.savefig

    def inspect_then_save(fig, *args, **kwargs):
        fig.canvas.draw()
        for i, ax in enumerate(fig.axes):
            for axis, label, ticks in (
                ("x", ax.get_xlabel(), ax.get_xticklabels()),
                ("y", ax.get_ylabel(), ax.get_yticklabels()),
            ):
                shown = [t.get_text() for t in ticks if t.get_text().strip()]
                if not label.strip():
                    problems.append(f"axes {i}: no {axis} label")
                if len(shown) < 2:
                    problems.append(f"axes {i} ({label!r}): {axis} tick labels {shown}")
        saved.append(fig)
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", inspect_then_save)
    PLOTS[name](tmp_path)
    assert saved, f"{name}: no figure was saved"
    assert not problems, f"{name}: {problems}"
    assert all(p.stat().st_size > 0 for p in tmp_path.glob("*.png"))
