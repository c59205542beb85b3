"""Continued pretraining of the real SmolLM2-135M-Instruct (assets.smollm2_dir), converted with
`infi convert from-hf` and trained with `checkpoint.load` (weights only):

- its step-0 validation loss under TP=3 and under PP=2 equals the HF model's loss on the same token
  windows (fp32, |diff| <= 1e-3). TP=3, not 2: SmolLM2 has 9 heads and 3 KV heads;
- a short CPT run (bf16) on a domain corpus (PubMedQA abstracts, SmolLM2's tokenizer) lowers the
  loss on held-out documents of that domain (the same validation windows before and after);
- a run stopped halfway resumes with no loss jump: its remaining losses are the uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml

from megatron_infi import assets
from megatron_infi.checkpoints_tools import step0
from megatron_infi.demo import real_cpt
from tests.training.launch import losses, run_train

pytestmark = [pytest.mark.slow, pytest.mark.dist]
STEPS, STOP = 6, 3


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(HF dir, converted checkpoint root, PubMedQA indexed-dataset prefix)."""
    try:
        assets.smollm2_dir()
    except assets.AssetError as err:
        pytest.skip(str(err))
    root = tmp_path_factory.mktemp("smollm2")
    hf, ckpt = real_cpt.convert_smollm2(root / "mcore")
    prefix = real_cpt.write_domain_corpus(root / "pubmed", ckpt / "tokenizer")
    return hf, ckpt, prefix


def cpt_config(run_dir, ckpt, prefix, parallel: dict, **train) -> dict:
    """launch/configs/demo/cpt.yaml with the checkpoint's model section, at test size."""
    cfg = yaml.safe_load(real_cpt.CPT_CONFIG.read_text())
    cfg["model"].update(yaml.safe_load((ckpt / "model.yaml").read_text())["model"])
    cfg["run_dir"] = str(run_dir)
    cfg["parallel"] = parallel
    cfg["checkpoint"].update(load=str(ckpt))
    cfg["data"].update(tokenizer=str(ckpt / "tokenizer"), blend=[{"prefix": str(prefix)}], seq_length=128)
    cfg["train"].update(global_batch_size=4, micro_batch_size=1, **train)
    return cfg


@pytest.mark.parametrize("name,nproc,parallel", [("tp3", 3, {"tensor": 3}), ("pp2", 2, {"pipeline": 2})])
def test_step0_loss_equals_the_hf_models(smollm2, tmp_path, name, nproc, parallel):
    hf, ckpt, prefix = smollm2
    run_dir = tmp_path / name
    cfg = cpt_config(run_dir, ckpt, prefix, parallel, train_iters=0, eval_interval=0, precision="fp32")
    run_train(cfg, nproc=nproc, timeout=1500)
    report = step0.compare(run_dir, hf)
    assert (report["tp"], report["pp"]) == (parallel.get("tensor", 1), parallel.get("pipeline", 1))
    assert report["abs_diff"] <= 1e-3, report
    # a trained model on English text, far below a uniform guess over the vocab
    assert report["step0_loss_hf"] < math.log(49152) / 2


@pytest.mark.long  # three 135M-parameter runs: ~15 min on 2 CPU cores
def test_cpt_lowers_held_out_domain_loss_and_resumes_without_a_jump(smollm2, tmp_path):
    hf, ckpt, prefix = smollm2
    parallel = {"pipeline": 2}
    train = dict(train_iters=STEPS, eval_interval=STEPS, precision="bf16")
    full = cpt_config(tmp_path / "full", ckpt, prefix, parallel, **train)
    run_train(full, nproc=2, timeout=1500)
    valid = real_cpt.valid_losses(tmp_path / "full")
    assert sorted(valid) == [0, STEPS]
    # the same held-out windows before and after: what training changed
    assert valid[STEPS] < valid[0] - 0.05, valid

    cut = {**full, "run_dir": str(tmp_path / "cut"), "train": {**full["train"], "exit_interval": STOP}}
    run_train(cut, nproc=2, timeout=1500)
    assert sorted(losses(tmp_path / "cut")) == list(range(1, STOP + 1))
    run_train({**cut, "train": {**cut["train"], "exit_interval": 0}}, nproc=2, timeout=1500)
    expected, got = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(STOP + 1, STEPS + 1):
        assert got[step] == expected[step], (step, got[step], expected[step])
    assert real_cpt.valid_losses(tmp_path / "cut") == valid
    records = [json.loads(line) for line in (tmp_path / "cut" / "logs" / "train_metrics.jsonl").open()]
    assert [r["iteration"] for r in records if "valid_loss" in r] == [0, STEPS]  # no step-0 eval on resume
    shutil.rmtree(tmp_path / "cut" / "checkpoints")  # 1.5 GB of optimizer state
