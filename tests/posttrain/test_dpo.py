"""`infi dpo`: on held-out pairs the chosen-vs-rejected reward margin grows; the export loads.

Pairs are real: CHAMP's expert solutions (chosen) against GPT / PaLM solutions that CHAMP's
annotators marked as containing a wrong step (rejected).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_infi.config.core import load_config
from megatron_infi.config.prompt import CONTRACT_FILE, PromptContract
from megatron_infi.demo import reference_data
from megatron_infi.posttrain.dpo import DPOStageConfig, run_dpo


def dpo_config(model_dir: Path, data: Path, out: Path, *extra: str) -> DPOStageConfig:
    return load_config(
        DPOStageConfig,
        None,
        [
            f"model={model_dir}",
            f"output_dir={out}",
            f"data=[{data}]",
            "eval_fraction=0.25",
            "max_length=128",
            "beta=0.1",
            "schedule={max_steps: 4, global_batch_size: 2, micro_batch_size: 2}",
            "optim={lr: 0.005, warmup_ratio: 0.0}",
            "checkpoint.save_interval=2",
            "logging.log_interval=1",
            "logging.tensorboard=true",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    pairs = reference_data.champ_preference_pairs()[:16]
    return reference_data.write_jsonl(tmp_path_factory.mktemp("pairs") / "champ_pairs.jsonl", pairs)


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, tiny_model_dir, pairs_file):
    out = tmp_path_factory.mktemp("dpo") / "run"
    return out, run_dpo(dpo_config(tiny_model_dir, pairs_file, out))


def test_held_out_reward_margin_grows(dpo_run):
    _, summary = dpo_run
    assert summary["train_pairs"] == 12 and summary["held_out_pairs"] == 4
    before, after = summary["held_out_before"], summary["held_out_after"]
    assert before["eval_rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at start
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"] + 0.05
    assert after["eval_rewards/accuracies"] > 0.5
    assert after["eval_loss"] < before["eval_loss"]


def test_export_is_a_loadable_hf_dir(dpo_run, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    out, summary = dpo_run
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, start.model.layers[0].mlp.up_proj.weight)
    assert summary["global_steps"] == 4 and summary["reference"] == str(tiny_model_dir)
    assert json.loads((out / "summary.json").read_text())["held_out_after"] == summary["held_out_after"]
    assert (out / "dpo.png").stat().st_size > 0
    assert json.loads((Path(summary["model_dir"]) / CONTRACT_FILE).read_text()) == PromptContract().to_dict()
    assert summary["prompts"] == {"rendered": 16, "same_contract": 0, "other_contract": 0}
    assert (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file()


def test_precomputed_reference_log_probs(tmp_path, tiny_model_dir, pairs_file):
    cfg = dpo_config(
        tiny_model_dir,
        pairs_file,
        tmp_path / "run",
        "reference=precomputed",
        "schedule.max_steps=2",
        "eval_fraction=0.0",
    )
    summary = run_dpo(cfg)
    assert summary["reference_mode"] == "precomputed" and summary["held_out_pairs"] == 0
    assert summary["train_margins"][-1][1] > 0  # the policy moved away from the precomputed reference


def test_finished_run_is_not_trained_again(dpo_run, tiny_model_dir, pairs_file):
    out, summary = dpo_run
    weights = out / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert run_dpo(dpo_config(tiny_model_dir, pairs_file, out)) == json.loads(json.dumps(summary))
    assert weights.stat().st_mtime_ns == before
