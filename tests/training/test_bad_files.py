"""Corrupted or truncated data and checkpoints give errors that name the file."""

import shutil
from pathlib import Path

import pytest

from megatron_infi.data.indexed import DataError, check_indexed_dataset
from megatron_infi.training import checkpoint as ckpt


def _copy_corpus(prefix, dst):
    for ext in (".bin", ".idx"):
        shutil.copy(f"{prefix}{ext}", dst / f"c{ext}")
    return dst / "c"


def test_intact_dataset_passes(boolq_corpus, tmp_path):
    summary = check_indexed_dataset(boolq_corpus[1])
    assert summary.sequences == 400 and summary.tokens > 10_000


@pytest.mark.parametrize("ext,cut", [(".bin", 100), (".idx", 20), (".idx", 3)])
def test_truncated_dataset_names_file(boolq_corpus, tmp_path, ext, cut):
    prefix = _copy_corpus(boolq_corpus[1], tmp_path)
    path = Path(f"{prefix}{ext}")
    data = path.read_bytes()
    path.write_bytes(data[:-cut] if cut < 10 or ext == ".bin" else data[:cut])
    with pytest.raises(DataError) as info:
        check_indexed_dataset(prefix)
    assert str(path) in str(info.value)


def test_garbage_index_names_file(boolq_corpus, tmp_path):
    prefix = _copy_corpus(boolq_corpus[1], tmp_path)
    Path(f"{prefix}.idx").write_bytes(b"not an index at all" * 10)
    with pytest.raises(DataError, match=r"c\.idx.*not a Megatron index"):
        check_indexed_dataset(prefix)


def test_latest_pointing_at_missing_checkpoint(tmp_path):
    (tmp_path / ckpt.LATEST_FILE).write_text("12\n")
    with pytest.raises(ckpt.CheckpointError, match="iter_0000012"):
        ckpt.latest_iteration(tmp_path)
    (tmp_path / ckpt.LATEST_FILE).write_text("twelve")
    with pytest.raises(ckpt.CheckpointError, match=ckpt.LATEST_FILE):
        ckpt.latest_iteration(tmp_path)
