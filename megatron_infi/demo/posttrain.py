"""Post-training stages on CPU: SFT (two phases) -> DPO pairs -> DPO.

Each function takes explicit paths, loads a `launch/configs/posttrain/demo*.yaml` (the toy model's by
default; the real model's track passes its own, real_posttrain.py) and returns the stage's summary.
`run_posttrain_demo` chains the three over one model dir on the toy data (tests).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from megatron_infi.demo import demo_config, reference_data


def write_demo_data(data_dir: str | Path) -> dict[str, Path]:
    """Real maths data in the stage contracts: GSM-Symbolic (phase 1), CHAMP (phase 2), and held-apart
    GSM-Symbolic problems (another seed) with expert solutions for the DPO pairs."""
    data_dir = Path(data_dir)
    gsm = reference_data.sft_records(reference_data.gsm_symbolic(32, seed=1), "gsm_symbolic")
    champ = reference_data.sft_records(reference_data.champ()[:32], "champ")
    return {
        "phase1": reference_data.write_jsonl(data_dir / "gsm_symbolic_sft.jsonl", gsm),
        "phase2": reference_data.write_jsonl(data_dir / "champ_sft.jsonl", champ),
        "problems": write_pair_problems(data_dir),
    }


def write_pair_problems(data_dir: str | Path) -> Path:
    """The DPO-pairs problems alone (for a demo whose SFT data comes from the selection stage)."""
    problems = reference_data.pair_problems(reference_data.gsm_symbolic(8, seed=2))
    return reference_data.write_jsonl(Path(data_dir) / "gsm_symbolic_problems.jsonl", problems)


def demo_sft(
    model_dir: str | Path,
    out_dir: str | Path,
    phase1: str | Path,
    phase2: str | Path,
    config: str = "posttrain/demo_sft.yaml",
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Two-phase SFT of `model_dir` with `config` (+ `values` overrides); the final HF dir is
    `<out_dir>/<last phase>/model` (result["final_model"])."""
    from megatron_infi.posttrain.sft import SFTStageConfig, run_sft

    paths = {
        "model": str(model_dir),
        "output_dir": str(out_dir),
        "phases.0.data": [str(phase1)],
        "phases.1.data": [str(phase2)],
    }
    return run_sft(demo_config(SFTStageConfig, config, {**paths, **(values or {})}))


def demo_dpo_pairs(
    model_dir: str | Path,
    problems: str | Path,
    out_dir: str | Path,
    config: str = "posttrain/demo_dpo_pairs.yaml",
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sample `model_dir` on `problems`; writes `<out_dir>/pairs.jsonl` and report.json / report.md."""
    from megatron_infi.posttrain.dpo_pairs import DPOPairsConfig, run_dpo_pairs

    paths = {"problems": [str(problems)], "output_dir": str(out_dir), "generation.model": str(model_dir)}
    return run_dpo_pairs(demo_config(DPOPairsConfig, config, {**paths, **(values or {})}))


def demo_dpo(
    model_dir: str | Path,
    pairs: str | Path,
    out_dir: str | Path,
    config: str = "posttrain/demo_dpo.yaml",
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """DPO of `model_dir` on `pairs` with `config` (+ `values`); the HF dir is `<out_dir>/model`."""
    from megatron_infi.posttrain.dpo import DPOStageConfig, run_dpo

    paths = {"model": str(model_dir), "output_dir": str(out_dir), "data": [str(pairs)]}
    return run_dpo(demo_config(DPOStageConfig, config, {**paths, **(values or {})}))


def run_posttrain_demo(
    model_dir: str | Path, work_dir: str | Path, data: dict[str, Path] | None = None
) -> dict[str, Any]:
    """SFT -> DPO pairs -> DPO under `work_dir` (sft/, dpo_pairs/, dpo/, posttrain_data/).

    `data` may give {"phase1", "phase2", "problems"} paths (e.g. the SFT-selection stage's output);
    missing entries come from `write_demo_data`.
    """
    work_dir = Path(work_dir)
    data = {**write_demo_data(work_dir / "posttrain_data"), **(data or {})}
    timings: dict[str, float] = {}

    def timed(name, fn, *args):
        wall, cpu = time.time(), time.process_time()
        result = fn(*args)
        timings[f"{name}_wall_s"] = round(time.time() - wall, 1)
        timings[f"{name}_cpu_s"] = round(time.process_time() - cpu, 1)
        return result

    sft = timed("sft", demo_sft, model_dir, work_dir / "sft", data["phase1"], data["phase2"])
    pairs = timed("dpo_pairs", demo_dpo_pairs, sft["final_model"], data["problems"], work_dir / "dpo_pairs")
    dpo = timed("dpo", demo_dpo, sft["final_model"], pairs["pairs_file"], work_dir / "dpo")
    return {"sft": sft, "dpo_pairs": pairs, "dpo": dpo, "timings": timings}
