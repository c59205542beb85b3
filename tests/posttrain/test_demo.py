"""The post-training part of `make demo` (SFT -> DPO pairs -> DPO) on the tiny model, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_infi.demo.posttrain import run_posttrain_demo
from megatron_infi.posttrain.data import read_preference_records
from megatron_infi.utils import SkipCounter


@pytest.mark.slow
def test_posttrain_demo_chain(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = run_posttrain_demo(tiny_model_dir, tmp_path)
    sft, pairs, dpo = result["sft"], result["dpo_pairs"], result["dpo"]
    assert sft["final_model"] == str(tmp_path / "sft" / "advanced" / "model")
    assert all(phase["last_loss"] < phase["first_loss"] for phase in sft["phases"])
    assert pairs["pairs"] >= 4 and pairs["expert_solutions_verified"] == pairs["problems"]
    records = read_preference_records([pairs["pairs_file"]], SkipCounter())
    assert len(records) == pairs["pairs"]
    assert json.loads((tmp_path / "dpo_pairs" / "report.json").read_text())["model"] == sft["final_model"]
    assert dpo["init_from"] == sft["final_model"]
    assert dpo["held_out_after"]["eval_rewards/margins"] > dpo["held_out_before"]["eval_rewards/margins"]
    model_dir = Path(dpo["model_dir"])
    AutoModelForCausalLM.from_pretrained(model_dir)
    assert AutoTokenizer.from_pretrained(model_dir).chat_template
    assert set(result["timings"]) == {
        f"{s}_{k}" for s in ("sft", "dpo_pairs", "dpo") for k in ("wall_s", "cpu_s")
    }
