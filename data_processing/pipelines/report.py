"""report.md and funnel.png of a pretraining data run, rendered from its manifest."""

from __future__ import annotations

from pathlib import Path

from megatron_infi.plots import label_axes, log_count_axis, pyplot, save_figure
from megatron_infi.utils import atomic_write_text


def plot_funnel(funnel: dict[str, dict[str, dict[str, int]]], path: Path) -> None:
    """Documents and tokens left after each stage, one line per domain (log scale)."""
    stages = list(funnel)
    domains = list(dict.fromkeys(d for rows in funnel.values() for d in rows))
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("documents", "tokens"), strict=True):
        for domain in domains:
            values = [funnel[s].get(domain, {}).get(metric, 0) for s in stages]
            ax.plot(stages, values, marker="o", label=domain)
        label_axes(ax, "pipeline stage", f"{metric} (log scale)", f"{metric} left after each stage")
        log_count_axis(ax)
        ax.tick_params(axis="x", rotation=30)
    if domains:  # a run whose filters removed everything has none
        axes[0].legend(title="domain", loc="lower left", fontsize="small")
    save_figure(fig, path)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _source_problems(manifest: dict) -> list[str]:
    """Empty sources and steps that dropped most of a source, at the top where nobody misses them."""
    empty, warnings = manifest["empty_sources"], manifest["warnings"]
    if not empty and not warnings:
        return []
    out = ["## Warnings", ""]
    for item in empty:
        status = "allowed (allow_empty: true)" if item["allow_empty"] else "**FAILED**"
        out.append(f"- {status}: {item['message']}")
    out += [f"- more than half dropped: {w['message']}" for w in warnings]
    return out + [""]


def _source_table(flow: dict[str, dict]) -> list[str]:
    stages = list(dict.fromkeys(step["stage"] for info in flow.values() for step in info["steps"]))
    rows = []
    for source, info in flow.items():
        left = info["records"]
        after = {}
        for step in info["steps"]:
            left -= step["dropped"]
            after[step["stage"]] = left
        shown, row = info["records"], [source, info["records"]]
        for stage in stages:
            shown = after.get(stage, shown)
            row.append(shown)
        rows.append(row)
    return _table(["source", "records"] + stages, rows)


def render_markdown(manifest: dict) -> str:
    out = [
        "# Pretraining data run",
        "",
        f"Created {manifest['created']}; tokenizer `{manifest['tokenizer']['path']}` "
        f"(vocab {manifest['tokenizer']['vocab_size']}, EOD `{manifest['tokenizer']['eod_token']}`), "
        f"dtype {manifest['dtype']}.",
        "",
    ]
    out += _source_problems(manifest)
    out += ["## Output", ""]
    out += _table(
        ["domain", "files", "documents", "tokens (with EOD)"],
        [[d, f"{v['prefix']}.bin/.idx", v["documents"], v["tokens"]] for d, v in manifest["domains"].items()],
    )
    out += [
        "",
        f"Total: {manifest['documents']} documents, {manifest['tokens']} tokens.",
        "",
        "## Funnel",
        "",
        "![funnel](funnel.png)",
        "",
    ]
    funnel = manifest["funnel"]
    domains = list(next(iter(funnel.values()), {}))
    out += _table(
        ["stage"] + [f"{d} docs / tokens" for d in domains],
        [
            [stage]
            + [f"{rows.get(d, {}).get('documents', 0)} / {rows.get(d, {}).get('tokens', 0)}" for d in domains]
            for stage, rows in funnel.items()
        ],
    )
    out += ["", "## Documents per source", "", "Documents of each source left after each stage.", ""]
    out += _source_table(manifest["source_flow"])
    out += ["", "## Drops by step", ""]
    rows = []
    for stage, steps in manifest["stages"].items():
        for step in steps:
            reasons = ", ".join(f"{k}: {v}" for k, v in step["reasons"].items()) or "-"
            rows.append([stage, step["step"], step["total"], step["kept"], step["dropped"], reasons])
    out += _table(["stage", "step", "in", "kept", "dropped", "reasons"], rows)
    if manifest["quarantined"]:
        out += ["", "## Quarantined records (see quarantine/<source>/)", ""]
        out += _table(
            ["source", "reasons"],
            [[s, ", ".join(f"{k}: {v}" for k, v in r.items())] for s, r in manifest["quarantined"].items()],
        )
    if manifest["decontamination"]:
        out += [
            "",
            f"## Decontamination: {manifest['decontamination']['documents_dropped']} documents dropped "
            "(decontamination_report.json)",
        ]
    out += ["", "## Sources", ""]
    out += _table(
        ["name", "domain", "format", "files", "bytes", "path"],
        [
            [s["name"], s["domain"], s["format"], s["files"], s["bytes"], s["path"]]
            for s in manifest["sources"]
        ],
    )
    return "\n".join(out) + "\n"


def write_report(root: Path, manifest: dict) -> None:
    if manifest["funnel"]:
        plot_funnel(manifest["funnel"], root / "funnel.png")
    atomic_write_text(root / "report.md", render_markdown(manifest))
