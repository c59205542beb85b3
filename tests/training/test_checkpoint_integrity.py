"""A checkpoint records the size and checksum of every file; a damaged or truncated shard fails resume,
`checkpoint.load` and `infi convert to-hf` with an error naming the shard (before: 1 MB of garbage in a
shard resumed with exit 0 and exported silently). Checkpoints saved before checksums load with a warning."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from megatron_infi.checkpoints_tools import to_hf
from megatron_infi.training import checkpoint as ckpt
from megatron_infi.utils import xxh3_file
from tests.training.launch import base_config, train_in_process

ITER = "iter_0000001"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, boolq_corpus):
    """A one-iteration run (checkpoint with optimizer state); tests work on copies."""
    tokenizer, prefix = boolq_corpus
    run = tmp_path_factory.mktemp("ckpt") / "run"
    train_in_process(base_config(run, tokenizer, prefix, train={"train_iters": 1}))
    return run


def _copy_run(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def _resume(run: Path, boolq_corpus):
    tokenizer, prefix = boolq_corpus
    return train_in_process(base_config(run, tokenizer, prefix, train={"train_iters": 2}))


def _largest_shard(run: Path) -> Path:
    return max((run / "checkpoints" / ITER).glob("*.distcp"), key=lambda p: p.stat().st_size)


def test_checksums_cover_every_file(trained):
    iter_dir = trained / "checkpoints" / ITER
    record = json.loads((iter_dir / ckpt.CHECKSUMS_FILE).read_text())
    files = sorted(p.name for p in iter_dir.iterdir() if p.name != ckpt.CHECKSUMS_FILE)
    assert record["algorithm"] == "xxh3_64" and sorted(record["files"]) == files
    assert ckpt.RUN_FILE in files and ".metadata" in files
    for name, entry in record["files"].items():
        assert entry == {"bytes": (iter_dir / name).stat().st_size, "xxh3_64": xxh3_file(iter_dir / name)}


def test_garbage_in_a_shard_fails_resume_load_and_export(trained, tmp_path, boolq_corpus, capsys):
    run = _copy_run(trained, tmp_path)
    shard = _largest_shard(run)
    size = shard.stat().st_size
    assert size > 2 << 20
    with open(shard, "r+b") as handle:  # same size, different bytes: only a checksum sees it
        handle.seek(size // 2)
        handle.write(b"\x5a" * (1 << 20))
    with pytest.raises(ckpt.CheckpointError, match=rf"^{shard}: content differs from checksums.json"):
        _resume(run, boolq_corpus)
    # checkpoint.load (continued pretraining / annealing from another run) checks the same way.
    tokenizer, prefix = boolq_corpus
    cfg = base_config(tmp_path / "next", tokenizer, prefix, checkpoint={"load": str(run / "checkpoints")})
    with pytest.raises(ckpt.CheckpointError, match=rf"^{shard}: content differs"):
        train_in_process(cfg)
    # infi convert to-hf refuses with exit 2 and writes nothing.
    assert to_hf.main(["--load", str(run / "checkpoints"), "--out", str(tmp_path / "hf")]) == 2
    assert f"{shard}: content differs from checksums.json" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


def test_truncated_shard_is_named(trained, tmp_path, boolq_corpus):
    run = _copy_run(trained, tmp_path)
    shard = _largest_shard(run)
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[: size // 3])
    with pytest.raises(
        ckpt.CheckpointError, match=rf"^{shard}: {size // 3} bytes, checksums.json records {size}"
    ):
        _resume(run, boolq_corpus)


def test_checkpoint_without_checksums_loads_with_a_warning(trained, tmp_path, boolq_corpus, caplog):
    run = _copy_run(trained, tmp_path)
    iter_dir = run / "checkpoints" / ITER
    (iter_dir / ckpt.CHECKSUMS_FILE).unlink()  # as saved before checksums were recorded
    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        trainer, _ = _resume(run, boolq_corpus)
    assert trainer.state.iteration == 2
    assert f"{iter_dir}: no checksums.json" in caplog.text
    # Even there a truncated shard is named by file (from the byte ranges in torch DCP's .metadata).
    (run / "checkpoints" / "iter_0000002" / ckpt.CHECKSUMS_FILE).unlink()
    shard = _largest_shard(run)
    shard = run / "checkpoints" / "iter_0000002" / shard.name
    shard.write_bytes(shard.read_bytes()[:1000])
    tokenizer, prefix = boolq_corpus
    with pytest.raises(ckpt.CheckpointError, match=rf"^{shard}: 1000 bytes, the checkpoint's .metadata"):
        train_in_process(base_config(run, tokenizer, prefix, train={"train_iters": 3}))
