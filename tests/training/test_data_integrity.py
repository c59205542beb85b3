"""Data that would train silently wrong fails the preflight with an error naming the file: token ids
outside the vocabulary (TP=1 crashed with a bare IndexError, TP=2 trained on masked embeddings with
grad norm 0), an edited .idx whose documents read into their neighbours, and tokens overwritten with
other valid ids (caught by `data.verify: full` through the manifest's checksum)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from megatron_infi.data import indexed
from megatron_infi.data.indexed import DataError, integrity_record, verify_indexed_dataset
from megatron_infi.data.tokenizer import load_tokenizer
from tests.training.launch import base_config, run_train, train_in_process

VOCAB = 128256  # the Llama-3 tokenizer of the corpus


def _copy(corpus, dst: Path, manifest: bool) -> Path:
    """The corpus as `dst/c.bin/.idx`, optionally with a manifest.json as the data pipeline writes it."""
    tokenizer, prefix = corpus
    dst.mkdir(parents=True, exist_ok=True)
    for ext in (".bin", ".idx"):
        shutil.copy(f"{prefix}{ext}", dst / f"c{ext}")
    if manifest:
        _write_manifest(tokenizer, dst / "c")
    return dst / "c"


def _write_manifest(tokenizer: Path, prefix: Path) -> None:
    record = {"prefix": prefix.name, "bin": f"{prefix.name}.bin", "idx": f"{prefix.name}.idx"}
    record.update(integrity_record(prefix))
    tok = {"sha256": load_tokenizer(tokenizer).sha256, "vocab_size": VOCAB}
    manifest = {"tokenizer": tok, "domains": {"web": record}}
    (prefix.parent / "manifest.json").write_text(json.dumps(manifest))


def _idx_arrays(prefix: Path):
    """(sizes, pointers) of the index, writable in place."""
    data = bytearray(Path(f"{prefix}.idx").read_bytes())
    sequences = int(np.frombuffer(data[18:26], dtype=np.uint64)[0])
    sizes = np.frombuffer(data, dtype=np.int32, count=sequences, offset=34)
    pointers = np.frombuffer(data, dtype=np.int64, count=sequences, offset=34 + 4 * sequences)
    return data, sizes, pointers


def _tokens(prefix: Path) -> np.ndarray:
    return np.fromfile(f"{prefix}.bin", dtype=np.int32)


def _no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the data error")

    monkeypatch.setattr("megatron_infi.models.gpt.build_model", refuse)  # what the text family builds with


def test_intact_data_passes_and_fast_reads_no_tokens(boolq_corpus, tmp_path, monkeypatch):
    prefix = _copy(boolq_corpus, tmp_path, manifest=True)
    record = json.loads((tmp_path / "manifest.json").read_text())["domains"]["web"]
    assert record["max_token_id"] < VOCAB and record["bin_bytes"] == Path(f"{prefix}.bin").stat().st_size
    verify_indexed_dataset(prefix, VOCAB, "full", record)

    def no_scan(*args):
        raise AssertionError("fast mode scanned the tokens although the manifest records max_token_id")

    monkeypatch.setattr(indexed, "scan_tokens", no_scan)
    verify_indexed_dataset(prefix, VOCAB, "fast", record)


@pytest.mark.parametrize("manifest", [False, True], ids=["scanned", "from-manifest"])
def test_out_of_vocab_ids_name_the_file_at_tp1(boolq_corpus, tmp_path, monkeypatch, manifest):
    prefix = _copy(boolq_corpus, tmp_path / "data", manifest=False)
    tokens = _tokens(prefix)
    tokens[100:110] = VOCAB + 3  # data tokenized with a bigger vocabulary
    tokens.tofile(f"{prefix}.bin")
    if manifest:  # the pipeline records the real maximum; fast mode trusts it without reading tokens
        _write_manifest(boolq_corpus[0], prefix)
    _no_model(monkeypatch)
    cfg = base_config(tmp_path / "run", boolq_corpus[0], prefix)
    with pytest.raises(DataError) as info:
        train_in_process(cfg)
    message = str(info.value)
    assert message.startswith(f"{prefix}.bin: token id {VOCAB + 3}")
    assert ("recorded in" if manifest else "found by scanning") in message


@pytest.mark.dist
def test_out_of_vocab_ids_name_the_file_at_tp2(boolq_corpus, tmp_path):
    """At TP=2 the vocab-parallel embedding masks such ids: training ran with loss constant and grad
    norm 0. Both ranks now stop before building the model, naming the file."""
    prefix = _copy(boolq_corpus, tmp_path / "data", manifest=False)
    tokens = _tokens(prefix)
    tokens[5] = VOCAB + 1000
    tokens.tofile(f"{prefix}.bin")
    cfg = base_config(tmp_path / "run", boolq_corpus[0], prefix, parallel={"tensor": 2})
    proc = run_train(cfg, nproc=2, check=False, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count(f"error: {prefix}.bin: token id {VOCAB + 1000}") == 2, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_idx_size_edited_into_neighbours_names_the_idx(boolq_corpus, tmp_path):
    """The issue's case: one document's size raised so that it reads far into the next documents."""
    prefix = _copy(boolq_corpus, tmp_path, manifest=False)
    data, sizes, _ = _idx_arrays(prefix)
    sizes[10] *= 50
    Path(f"{prefix}.idx").write_bytes(data)
    with pytest.raises(DataError, match=rf"^{prefix}\.idx: corrupted \(sequence 11: pointer"):
        verify_indexed_dataset(prefix, VOCAB, "fast", None)


def test_idx_sizes_and_pointers_edited_consistently(boolq_corpus, tmp_path):
    """Sizes and pointers edited together: a larger total no longer matches the .bin; a boundary moved
    between two documents (same total) is caught by the manifest's .idx checksum."""
    prefix = _copy(boolq_corpus, tmp_path, manifest=True)
    record = json.loads((tmp_path / "manifest.json").read_text())["domains"]["web"]
    original = Path(f"{prefix}.idx").read_bytes()
    data, sizes, pointers = _idx_arrays(prefix)
    sizes[10] += 500
    pointers[11:] += 500 * 4
    Path(f"{prefix}.idx").write_bytes(data)
    with pytest.raises(
        DataError, match=rf"c\.bin: truncated or corrupted .* {record['tokens'] + 500} tokens"
    ):
        verify_indexed_dataset(prefix, VOCAB, "fast", record)

    Path(f"{prefix}.idx").write_bytes(original)
    data, sizes, pointers = _idx_arrays(prefix)
    sizes[10] += 20
    sizes[11] -= 20
    pointers[11] += 20 * 4
    Path(f"{prefix}.idx").write_bytes(data)
    with pytest.raises(DataError, match=rf"^{prefix}\.idx: content differs from .*manifest"):
        verify_indexed_dataset(prefix, VOCAB, "fast", record, tmp_path / "manifest.json")


def test_tokens_overwritten_with_valid_ids_caught_only_by_full(boolq_corpus, tmp_path, monkeypatch):
    prefix = _copy(boolq_corpus, tmp_path / "data", manifest=True)
    tokens = _tokens(prefix)
    np.random.default_rng(0).integers(0, 1000, size=tokens.size, dtype=np.int32).tofile(f"{prefix}.bin")
    record = json.loads((tmp_path / "data" / "manifest.json").read_text())["domains"]["web"]
    verify_indexed_dataset(prefix, VOCAB, "fast", record)  # sizes, counts and ids all plausible
    _no_model(monkeypatch)
    cfg = base_config(tmp_path / "run", boolq_corpus[0], prefix, data={"verify": "full"})
    with pytest.raises(DataError, match=rf"^{prefix}\.bin: content differs from .*manifest.json \(xxh3_64"):
        train_in_process(cfg)


def test_manifest_counts_are_compared(boolq_corpus, tmp_path):
    prefix = _copy(boolq_corpus, tmp_path, manifest=True)
    record = json.loads((tmp_path / "manifest.json").read_text())["domains"]["web"]
    with pytest.raises(DataError, match=r"c\.bin: holds \d+ tokens, manifest.json records 152862"):
        verify_indexed_dataset(prefix, VOCAB, "fast", {**record, "tokens": 152862})
    verify_indexed_dataset(prefix, VOCAB, "off", {**record, "tokens": 152862})
