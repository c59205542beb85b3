"""`train.eval_at_start` logs the validation loss before the first update, and it equals the HF
export's loss on the same token windows (checkpoints_tools.step0); other windows give another loss."""

from __future__ import annotations

import json

import pytest

from megatron_infi.checkpoints_tools import step0, to_hf
from tests.training.launch import base_config, losses, run_train

pytestmark = [pytest.mark.dist]


def test_step0_validation_loss_equals_the_hf_models_loss_on_those_windows(tmp_path, boolq_corpus, capsys):
    tokenizer, prefix = boolq_corpus
    # A few updates first, so that the loss depends on which text it is measured on.
    trained = base_config(tmp_path / "trained", tokenizer, prefix, train={"train_iters": 6})
    run_train(trained)
    hf = to_hf.export(tmp_path / "trained" / "checkpoints", tmp_path / "hf")

    cpt = base_config(
        tmp_path / "cpt",
        tokenizer,
        prefix,
        checkpoint={"load": str(tmp_path / "trained" / "checkpoints")},
        train={"train_iters": 2, "eval_at_start": True, "eval_interval": 2, "eval_iters": 2, "seed": 11},
    )
    run_train(cpt)
    records = [json.loads(line) for line in (tmp_path / "cpt" / "logs" / "train_metrics.jsonl").open()]
    assert [r["iteration"] for r in records if "valid_loss" in r] == [0, 2]
    assert sorted(losses(tmp_path / "cpt")) == [1, 2]

    report = step0.compare(tmp_path / "cpt", hf)
    assert report["windows"] == 2 * 8 and report["seq_length"] == 64
    assert report["abs_diff"] <= 1e-4, report
    # the CLI: the same report; a run without a step-0 validation is named
    assert step0.main(["--run", str(tmp_path / "cpt"), "--hf", str(hf)]) == 0
    assert json.loads(capsys.readouterr().out)["step0_loss_hf"] == report["step0_loss_hf"]
    assert step0.main(["--run", str(tmp_path / "trained"), "--hf", str(hf)]) == 2
    assert "train.eval_at_start" in capsys.readouterr().err

    # Negative control: the next validation windows (what a wrong sample order would measure).
    cfg = step0.run_config(tmp_path / "cpt")
    cfg.train.eval_iters = 4
    later = {k: v[16:] for k, v in step0.step0_windows(cfg).items()}
    assert abs(step0.hf_loss(hf, later) - report["step0_loss_megatron"]) > 10 * report["abs_diff"]


def test_eval_at_start_needs_eval_iters():
    from megatron_infi.config.core import ConfigError
    from megatron_infi.config.schema import TrainLoopConfig

    with pytest.raises(ConfigError, match="eval_iters"):
        TrainLoopConfig(eval_at_start=True, eval_iters=0).validate()
