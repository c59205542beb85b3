"""Two trainers on one run_dir: the second is refused before it builds anything, naming the holder, with
exit 1; under torchrun no rank waits for the refused rank 0."""

from __future__ import annotations

import pytest

from megatron_infi.locks import LockHeldError
from tests.test_locks import _holder_process
from tests.training.launch import base_config, run_train, train_in_process


def test_second_trainer_is_refused_before_building_a_model(tmp_path, boolq_corpus, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built although run_dir is held")

    monkeypatch.setattr("megatron_infi.models.gpt.build_model", no_model)  # what the text family builds with
    tokenizer, prefix = boolq_corpus
    holder = _holder_process(tmp_path / "run")
    try:
        with pytest.raises(LockHeldError, match=f"run_dir .*run is held by pid {holder.pid}"):
            train_in_process(base_config(tmp_path / "run", tokenizer, prefix))
        assert not (tmp_path / "run" / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_finished_run_releases_run_dir(tmp_path, boolq_corpus):
    tokenizer, prefix = boolq_corpus
    cfg = base_config(tmp_path / "run", tokenizer, prefix, train={"train_iters": 1})
    train_in_process(cfg)
    trainer, losses = train_in_process(cfg)  # the same process again: the first run let go
    assert losses == [] and trainer.state.iteration == 1


@pytest.mark.dist
def test_torchrun_ranks_all_exit_when_run_dir_is_held(tmp_path, boolq_corpus):
    tokenizer, prefix = boolq_corpus
    cfg = base_config(tmp_path / "run", tokenizer, prefix, parallel={"tensor": 2})
    holder = _holder_process(tmp_path / "run")
    try:
        proc = run_train(cfg, nproc=2, check=False, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    # Both ranks report the holder (rank 1 learned it from rank 0) and exit 1.
    assert proc.stderr.count(f"error: run_dir {tmp_path / 'run'} is held by pid {holder.pid}") == 2, (
        proc.stderr
    )
    assert "exitcode  : 1" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
