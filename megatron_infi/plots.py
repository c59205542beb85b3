"""The axis setup every PNG the project writes shares: matplotlib without a display, labelled axes,
count axes on a log scale that still carry readable tick labels, and an atomic write."""

from __future__ import annotations

import io
from pathlib import Path

from megatron_infi.utils import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_axes(ax, xlabel: str, ylabel: str, title: str | None = None) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)


def _count_label(value: float, _pos=None) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def log_count_axis(ax) -> None:
    """The y axis of plotted counts on a symmetric log scale (0 stays plottable), labelled 20 / 500 /
    2k / 1M, with ticks inside each decade when the data span few decades (decade ticks alone leave a
    range inside one decade with one label or none). Call it after plotting."""
    import math

    from matplotlib.ticker import FuncFormatter, NullLocator, SymmetricalLogLocator

    low, high = sorted(abs(v) for v in ax.dataLim.intervaly)
    if not math.isfinite(high):  # nothing plotted (a data run whose filters removed everything)
        low = high = 1.0
    decades = math.log10(max(high, 1.0) / max(low, 1.0))
    subs = [1.0] if decades > 3 else [1.0, 2.0, 5.0] if decades > 1 else [1.0, 2.0, 3.0, 5.0]
    ax.set_yscale("symlog", linthresh=1.0)
    ax.yaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=1.0, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(_count_label))
    ax.yaxis.set_minor_locator(NullLocator())


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, render to PNG and write atomically; closes the figure."""
    plt = pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
