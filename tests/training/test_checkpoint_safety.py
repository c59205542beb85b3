"""A crash in the middle of a save leaves `latest` on the previous complete checkpoint; annealing starts
from a checkpoint's weights. Damaged checkpoints: test_checkpoint_integrity.py."""

import os

import pytest

from megatron_infi.training import checkpoint as ckpt
from tests.training.launch import base_config, losses, train_in_process


def test_crash_during_save_keeps_previous(tmp_path, boolq_corpus, monkeypatch):
    tokenizer, prefix = boolq_corpus
    cfg = base_config(
        tmp_path / "run", tokenizer, prefix, train={"train_iters": 2}, checkpoint={"save_interval": 1}
    )
    real_replace = os.replace
    calls = {"n": 0}

    def crash_on_second_checkpoint(src, dst):
        if str(dst).endswith("iter_0000002"):
            raise KeyboardInterrupt("simulated crash while renaming the checkpoint into place")
        calls["n"] += 1
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_on_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_in_process(cfg)
    root = tmp_path / "run" / "checkpoints"
    assert ckpt.latest_iteration(root) == 1
    assert not (root / "iter_0000002").exists()
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    # The next launch resumes from iteration 1 and finishes; the stale temp dir is cleaned up.
    trainer, _ = train_in_process(cfg)
    assert trainer.state.iteration == 2 and ckpt.latest_iteration(root) == 2
    assert not list(root.glob(".iter_*.tmp"))


@pytest.mark.parametrize("load_optimizer", [False, True], ids=["weights", "weights+adam"])
def test_anneal_starts_from_pretrain_weights_and_decays_to_min_lr(tmp_path, boolq_corpus, load_optimizer):
    tokenizer, prefix = boolq_corpus
    pre = base_config(
        tmp_path / "pre",
        tokenizer,
        prefix,
        train={"train_iters": 6},
        logging={"log_interval": 2, "tensorboard": True, "wandb": True},
    )
    train_in_process(pre)
    pre_losses = losses(tmp_path / "pre")
    # Logs live in the run dir: tensorboard events and an offline wandb run.
    assert list((tmp_path / "pre" / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "pre" / "wandb").glob("offline-run-*"))
    anneal = base_config(
        tmp_path / "anneal",
        tokenizer,
        prefix,
        stage="anneal",
        train={"train_iters": 3, "seed": 11},
        schedule={"style": "linear", "warmup_iters": 0, "decay_iters": 3},
        optimizer={"lr": 5e-4, "min_lr": 5e-5},
        # A new peak and minimum LR: the annealing schedule wins even when Adam's moments carry over.
        checkpoint={"load": str(tmp_path / "pre" / "checkpoints"), "load_optimizer": load_optimizer},
    )
    trainer, anneal_losses = train_in_process(anneal)
    # Started from the trained weights, not from scratch (a fresh model is at ~ln(vocab) = 11.8).
    assert anneal_losses[0] < pre_losses[1] - 0.2
    assert trainer.state.iteration == 3
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-5)
    info = ckpt.read_run_info(tmp_path / "anneal" / "checkpoints" / "iter_0000003")
    assert info["stage"] == "anneal" and info["config"]["checkpoint"]["load"].endswith("pre/checkpoints")


def test_resuming_a_finished_run_leaves_its_checkpoint_alone(tmp_path, boolq_corpus):
    """A requeued job that finds its run already finished must not rewrite the final checkpoint."""
    tokenizer, prefix = boolq_corpus
    cfg = base_config(tmp_path / "run", tokenizer, prefix, train={"train_iters": 2})
    train_in_process(cfg)
    final = tmp_path / "run" / "checkpoints" / "iter_0000002"
    before = {p: p.stat().st_mtime_ns for p in final.rglob("*")}
    trainer, again = train_in_process(cfg)
    assert again == [] and trainer.state.iteration == 2
    assert {p: p.stat().st_mtime_ns for p in final.rglob("*")} == before
