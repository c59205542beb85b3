"""selection_report.md and its PNGs (domains, clusters, response lengths): the funnel a person reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from megatron_infi.plots import label_axes, pyplot, save_figure


def bar_pair(path: Path, title: str, pool: dict[str, int], selected: dict[str, int], xlabel: str) -> None:
    keys = sorted(pool, key=lambda k: (-pool[k], k))
    x = np.arange(len(keys))
    fig, ax = pyplot().subplots(figsize=(max(6, 0.45 * len(keys) + 2), 4))
    ax.bar(x - 0.2, [pool[k] for k in keys], width=0.4, label="pool")
    ax.bar(x + 0.2, [selected.get(k, 0) for k in keys], width=0.4, label="selected")
    ax.set_xticks(
        x, keys, rotation=60 if len(keys) > 6 else 0, ha="right" if len(keys) > 6 else "center", fontsize=8
    )
    label_axes(ax, xlabel, "samples", title)
    ax.legend()
    save_figure(fig, path)


def length_histogram(path: Path, series: dict[str, np.ndarray]) -> None:
    fig, ax = pyplot().subplots(figsize=(7, 4))
    values = [v for v in series.values() if len(v)]
    top = max((int(v.max()) for v in values), default=1)
    bins = np.linspace(0, max(top, 1), 40)
    for name, value in series.items():
        if len(value):
            ax.hist(value, bins=bins, alpha=0.5, label=f"{name} (n={len(value)})")
    label_axes(ax, "response length (tokens)", "samples", "Difficulty proxy: response length")
    ax.legend()
    save_figure(fig, path)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def funnel_rows(stats: dict[str, Any]) -> list[list[Any]]:
    """(step, records in, records out, dropped: reasons) for every step, in pipeline order."""
    prep, sel, qual, cur = stats["prepare"], stats["select"], stats["quality"], stats["curriculum"]
    read = prep["kept"] + sum(prep["dropped"].values())
    rows = []
    remaining = read

    def reasons(prefixes: tuple[str, ...]) -> dict[str, int]:
        return {k: v for k, v in prep["dropped"].items() if k.startswith(prefixes)}

    groups = [
        ("read + convert", ("bad-row", "bad-record")),
        (
            "rule filters (language, truncation, final answer)",
            (
                "non-english",
                "wrong-language",
                "no-response",
                "response-too-short",
                "truncated",
                "missing-answer",
            ),
        ),
        ("decontamination", ("contaminated",)),
    ]
    grouped = set()
    for name, prefixes in groups:
        part = reasons(prefixes)
        grouped |= set(part)
        out = remaining - sum(part.values())
        rows.append([name, remaining, out, _fmt(part)])
        remaining = out
    other = {k: v for k, v in prep["dropped"].items() if k not in grouped}
    if other:
        out = remaining - sum(other.values())
        rows.append(["other preparation", remaining, out, _fmt(other)])
        remaining = out
    rows.append(
        [
            "diversity: domain-balanced + cluster-uniform, merged",
            sel["pool"],
            sel["merged"],
            f"domain pass {sel['domain_pass']}, then cluster pass {sel['cluster_pass']} from the rest",
        ]
    )
    rows.append(
        [
            "near-duplicates (n-gram)",
            sel["merged"],
            sel["selected"],
            f"{sel['near_duplicates']} near-duplicates; difficulty ({sel['difficulty']} first per quota): "
            f"median response {sel['median_tokens_selected']:.0f} tokens vs {sel['median_tokens_pool']:.0f} "
            f"in the pool, {sel['top_length_quintile_share']:.0%} in their cluster's top length quintile",
        ]
    )
    rows.append(
        [
            "quality (format, math-verify, sandbox, corrections, LLM score)",
            sel["selected"],
            qual["kept"],
            _fmt(qual["dropped"]) + (f"; {qual['corrected']} corrected" if qual.get("corrected") else ""),
        ]
    )
    rows.append(
        [
            "curriculum",
            qual["kept"],
            cur["phase1"] + cur["phase2"],
            f"phase 1: {cur['phase1']}, phase 2: {cur['phase2']}",
        ]
    )
    return rows


def _fmt(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def write_report(out_dir: Path, stats: dict[str, Any], lengths: dict[str, np.ndarray]) -> Path:
    """selection_report.md + domains.png + clusters.png + lengths.png in `out_dir`."""
    from megatron_infi.utils import atomic_write_text

    sel = stats["select"]
    bar_pair(
        out_dir / "domains.png",
        "Domains: pool vs selected",
        sel["domains_pool"],
        sel["domains_selected"],
        "domain",
    )
    bar_pair(
        out_dir / "clusters.png",
        f"K-means clusters (k={sel['k']}): pool vs selected",
        sel["clusters_pool"],
        sel["clusters_selected"],
        "cluster",
    )
    length_histogram(out_dir / "lengths.png", lengths)
    lines = ["# SFT data selection report", ""]
    lines += [f"Inputs: {', '.join(stats['inputs'])}", f"Config: `{stats['config']}`", ""]
    lines += ["## Funnel", ""] + _table(["step", "in", "out", "dropped / notes"], funnel_rows(stats)) + [""]
    lines += ["## Domains", "", "![domains](domains.png)", ""]
    lines += _table(
        ["domain", "pool", "quota", "selected"],
        [
            [d, n, sel["domain_quotas"].get(d, 0), sel["domains_selected"].get(d, 0)]
            for d, n in sorted(sel["domains_pool"].items(), key=lambda kv: -kv[1])
        ],
    )
    lines += ["", "## Clusters", "", "![clusters](clusters.png)", ""]
    sizes = sorted(sel["clusters_pool"].values())
    lines.append(
        f"k = {sel['k']}; pool cluster sizes min {sizes[0] if sizes else 0}, median {sizes[len(sizes) // 2] if sizes else 0}, max {sizes[-1] if sizes else 0}; cluster quota {max(sel['cluster_quotas'].values(), default=0)} per cluster."
    )
    lines += ["", "## Difficulty", "", "![lengths](lengths.png)", ""]
    for name, value in lengths.items():
        if len(value):
            lines.append(
                f"- {name}: n={len(value)}, median {int(np.median(value))} tokens, p90 {int(np.percentile(value, 90))}"
            )
    lines += ["", "## Decontamination (per benchmark item)", ""]
    contamination = stats["prepare"]["contamination"]
    if contamination:
        lines += _table(
            ["benchmark", "item", "method", "samples removed", "evidence (first)"],
            [
                [
                    c["benchmark"],
                    c["item_id"],
                    c["method"],
                    c["samples"],
                    c["evidence"][:80].replace("|", "\\|"),
                ]
                for c in contamination
            ],
        )
    else:
        lines.append(
            f"No contamination found against: {', '.join(stats['benchmarks']) or 'no benchmark files configured'}."
        )
    lines += ["", "## Quality", ""]
    qual = stats["quality"]
    lines.append(
        f"Verified: {qual['verified']} (math-verify / sandbox passed), corrected by the LLM: {qual.get('corrected', 0)}, dropped: {_fmt(qual['dropped'])}."
    )
    lines += ["", "## Curriculum", ""]
    cur = stats["curriculum"]
    lines.append(
        f"Phase 1 (foundational): {cur['phase1']} samples -> `{cur['phase1_file']}`; phase 2 (advanced): {cur['phase2']} samples -> `{cur['phase2_file']}`; split at {cur['split_tokens']} response tokens."
    )
    lines.append("")
    path = out_dir / "selection_report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
