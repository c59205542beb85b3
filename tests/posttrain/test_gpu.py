"""The GPU side of the one code path: bf16, gradient checkpointing on, flash-attn when installed.

pytest -q -m gpu tests/posttrain/test_gpu.py
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from megatron_infi.demo import reference_data
from megatron_infi.posttrain import common
from tests.posttrain.test_dpo import dpo_config
from tests.posttrain.test_sft import sft_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_device_selection_on_gpu():
    assert common.select_precision("auto") == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert common.select_gradient_checkpointing(None) is True
    expected = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    assert common.select_attn_implementation("auto") == expected


def test_sft_then_dpo_on_gpu(tmp_path, tiny_model_dir, sft_data):
    from safetensors import safe_open

    from megatron_infi.posttrain.dpo import run_dpo
    from megatron_infi.posttrain.sft import run_sft

    cfg = sft_config(
        tiny_model_dir, tmp_path / "sft", [("p", sft_data["phase1"], 4)], "runtime.precision=auto"
    )
    phase = run_sft(cfg)["phases"][0]
    assert phase["last_loss"] < phase["first_loss"]
    with safe_open(f"{phase['model_dir']}/model.safetensors", "pt") as weights:
        dtype = weights.get_tensor("model.norm.weight").dtype
    assert dtype == (torch.bfloat16 if common.select_precision("auto") == "bf16" else torch.float32)

    pairs = reference_data.write_jsonl(tmp_path / "pairs.jsonl", reference_data.champ_preference_pairs()[:16])
    summary = run_dpo(dpo_config(phase["model_dir"], pairs, tmp_path / "dpo", "runtime.precision=auto"))
    assert (
        summary["held_out_after"]["eval_rewards/margins"] > summary["held_out_before"]["eval_rewards/margins"]
    )
