"""The demo's SFT-data stage: real inputs from packaged data -> `sft-select` with
launch/configs/sft_data/demo.yaml, everything under one output dir."""

from __future__ import annotations

from pathlib import Path

from megatron_infi.config.core import load_yaml
from megatron_infi.data_processing.sft.config import SelectConfig
from megatron_infi.data_processing.sft.select import run_select
from megatron_infi.demo import CONFIGS, demo_config
from megatron_infi.demo.sft_inputs import build_demo_inputs

DEMO_CONFIG = "sft_data/demo.yaml"
DEMO_ROOT = "runs/demo/sft_data"  # the prefix of every path in demo.yaml


def _rebase(path: str, out_dir: Path) -> str:
    return str(out_dir / Path(path).relative_to(DEMO_ROOT)) if path.startswith(DEMO_ROOT) else path


def demo_select_config(
    out_dir: str | Path, tokenizer_dir: str | Path | None = None, overrides: dict | None = None
) -> SelectConfig:
    """demo.yaml with every `runs/demo/sft_data` path moved under `out_dir`."""
    out = Path(out_dir).resolve()
    raw = load_yaml(CONFIGS / DEMO_CONFIG)
    values: dict = {"output_dir": str(out)}
    for i, spec in enumerate(raw["inputs"]):
        values[f"inputs.{i}.path"] = _rebase(spec["path"], out)
    benchmarks = (raw.get("decontamination") or {}).get("benchmarks", [])
    values["decontamination.benchmarks"] = [_rebase(p, out) for p in benchmarks]
    if tokenizer_dir:
        values["difficulty.tokenizer"] = str(tokenizer_dir)
    return demo_config(SelectConfig, DEMO_CONFIG, {**values, **(overrides or {})})


def select_demo(
    out_dir: str | Path = DEMO_ROOT,
    tokenizer_dir: str | Path | None = None,
    overrides: dict | None = None,
) -> dict[str, Path]:
    """Build the demo inputs in `out_dir`/inputs and select; returns the artifacts' paths:
    phase1 / phase2 (canonical JSONL), report (selection_report.md), stats (selection_stats.json).
    `tokenizer_dir`: the SFT model's tokenizer (default: Llama-3, built into `out_dir`/tokenizer)."""
    out = Path(out_dir).resolve()
    build_demo_inputs(out / "inputs")
    cfg = demo_select_config(out, tokenizer_dir, overrides)
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
