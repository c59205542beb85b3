"""The demo's SFT-data stage: real inputs from packaged data -> `sft-select` with
launch/configs/sft_data/demo.yaml, everything under one output dir."""

from __future__ import annotations

from pathlib import Path

from data_processing.sft.config import SelectConfig
from data_processing.sft.demo_data import build_demo_inputs
from data_processing.sft.select import run_select
from megatron_infi.config.core import apply_overrides, from_dict, load_yaml, validate_tree

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "launch" / "configs" / "sft_data" / "demo.yaml"
DEMO_ROOT = "runs/demo/sft_data"  # the prefix of every path in demo.yaml


def _rebase(path: str, out_dir: Path) -> str:
    return str(out_dir / Path(path).relative_to(DEMO_ROOT)) if path.startswith(DEMO_ROOT) else path


def demo_config(
    out_dir: str | Path, tokenizer_dir: str | Path | None = None, overrides: list[str] | None = None
) -> SelectConfig:
    out = Path(out_dir).resolve()
    data = load_yaml(DEMO_CONFIG)
    data["output_dir"] = str(out)
    for spec in data["inputs"]:
        spec["path"] = _rebase(spec["path"], out)
    bench = data.setdefault("decontamination", {})
    bench["benchmarks"] = [_rebase(p, out) for p in bench.get("benchmarks", [])]
    if tokenizer_dir:
        data.setdefault("difficulty", {})["tokenizer"] = str(tokenizer_dir)
    apply_overrides(data, list(overrides or []))
    cfg = from_dict(SelectConfig, data)
    validate_tree(cfg)
    return cfg


def select_demo(
    out_dir: str | Path = DEMO_ROOT,
    tokenizer_dir: str | Path | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Path]:
    """Build the demo inputs in `out_dir`/inputs and select; returns the artifacts' paths:
    phase1 / phase2 (canonical JSONL), report (selection_report.md), stats (selection_stats.json).
    `tokenizer_dir`: the SFT model's tokenizer (default: Llama-3, built into `out_dir`/tokenizer)."""
    out = Path(out_dir).resolve()
    build_demo_inputs(out / "inputs")
    cfg = demo_config(out, tokenizer_dir, overrides)
    report = run_select(cfg)
    return {
        "phase1": out / "phase1.jsonl",
        "phase2": out / "phase2.jsonl",
        "report": report,
        "stats": out / "selection_stats.json",
    }


if __name__ == "__main__":
    import sys

    for name, path in select_demo(*(sys.argv[1:2] or [DEMO_ROOT])).items():
        print(f"{name}: {path}")
