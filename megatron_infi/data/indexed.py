"""Integrity of Megatron indexed datasets (`<prefix>.bin` / `<prefix>.idx`): the structure of the index
against the data file, token ids against the vocabulary, and content checksums.

The data pipeline records `integrity_record(prefix)` per file in manifest.json; the trainer's
preflight (`verify_indexed_dataset`) compares against it:
- fast: the index is self-consistent (sizes >= 0, each pointer = previous pointer + size x itemsize,
  document index monotone from 0 to the sequence count), its implied token count matches the .bin size
  and the manifest, the .idx checksum matches (the index is read anyway), and the manifest's
  `max_token_id` is below the vocabulary. Without a manifest record the tokens are scanned instead.
- full: also scan every token (max id) and compare the .bin checksum.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from megatron_infi.errors import DataError
from megatron_infi.utils import xxh3_file

_IDX_HEADER = b"MMIDIDX\x00\x00"
_HEADER_BYTES = 34
# Megatron's dtype codes (megatron.core.datasets.indexed_dataset.DType).
_DTYPES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
CHECKSUM = "xxh3_64"
_CHUNK = 1 << 24  # elements / bytes per read: bounded memory for any file size


@dataclass(frozen=True)
class IndexSummary:
    sequences: int
    documents: int  # entries of the document index (documents + 1)
    tokens: int
    dtype: np.dtype
    bin_bytes: int
    idx_bytes: int


def check_indexed_dataset(prefix: str | Path) -> IndexSummary:
    """Validate `<prefix>.idx` against itself and `<prefix>.bin`'s size without reading the data."""
    idx_path, bin_path = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    for path in (idx_path, bin_path):
        if not path.is_file():
            raise DataError(f"{path}: file not found")
    idx_size = idx_path.stat().st_size
    with open(idx_path, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
    if len(head) < _HEADER_BYTES or head[:9] != _IDX_HEADER:
        raise DataError(f"{idx_path}: not a Megatron index file (bad or truncated header)")
    (version,) = struct.unpack("<Q", head[9:17])
    (dtype_code,) = struct.unpack("<B", head[17:18])
    sequences, documents = struct.unpack("<QQ", head[18:34])
    if version != 1 or dtype_code not in _DTYPES:
        raise DataError(f"{idx_path}: unsupported version {version} or dtype code {dtype_code}")
    expected = _HEADER_BYTES + sequences * 4 + sequences * 8 + documents * 8
    if idx_size != expected:
        raise DataError(
            f"{idx_path}: truncated or corrupted ({idx_size} bytes, the header implies {expected})"
        )
    dtype = np.dtype(_DTYPES[dtype_code])
    tokens = _check_sequences(idx_path, sequences, dtype.itemsize) if sequences else 0
    _check_document_index(idx_path, sequences, documents)
    bin_size = bin_path.stat().st_size
    if bin_size != tokens * dtype.itemsize:
        raise DataError(
            f"{bin_path}: truncated or corrupted ({bin_size} bytes, {idx_path.name} implies "
            f"{tokens} tokens x {dtype.itemsize} bytes = {tokens * dtype.itemsize})"
        )
    return IndexSummary(sequences, documents, tokens, dtype, bin_size, idx_size)


def _check_sequences(idx_path: Path, sequences: int, itemsize: int) -> int:
    """Sizes non-negative and pointers contiguous from 0 (as every Megatron builder writes them): an
    edited size would otherwise make a sequence read into its neighbours. Returns the token count."""
    sizes = np.memmap(idx_path, np.int32, "r", offset=_HEADER_BYTES, shape=(sequences,))
    pointers = np.memmap(idx_path, np.int64, "r", offset=_HEADER_BYTES + sequences * 4, shape=(sequences,))
    offset = 0  # bytes before the current chunk
    for start in range(0, sequences, _CHUNK):
        chunk = np.asarray(sizes[start : start + _CHUNK], dtype=np.int64)
        if (chunk < 0).any():
            bad = start + int(np.argmax(chunk < 0))
            raise DataError(f"{idx_path}: corrupted (sequence {bad} has negative size {int(sizes[bad])})")
        expected = offset + np.concatenate(([0], np.cumsum(chunk[:-1] * itemsize)))
        wrong = np.flatnonzero(np.asarray(pointers[start : start + _CHUNK]) != expected)
        if wrong.size:
            bad = start + int(wrong[0])
            raise DataError(
                f"{idx_path}: corrupted (sequence {bad}: pointer {int(pointers[bad])} != {int(expected[wrong[0]])}, "
                f"where the sizes before it end; a size or pointer was altered)"
            )
        offset = int(expected[-1]) + int(chunk[-1]) * itemsize
    return offset // itemsize


def _check_document_index(idx_path: Path, sequences: int, documents: int) -> None:
    if documents == 0:
        return
    doc_idx = np.memmap(idx_path, np.int64, "r", offset=_HEADER_BYTES + sequences * 12, shape=(documents,))
    previous = 0
    for start in range(0, documents, _CHUNK):
        chunk = np.asarray(doc_idx[start : start + _CHUNK])
        if chunk[0] < previous or (np.diff(chunk) < 0).any():
            raise DataError(f"{idx_path}: corrupted (document index decreases)")
        previous = int(chunk[-1])
    if doc_idx[0] != 0 or doc_idx[-1] != sequences:
        raise DataError(
            f"{idx_path}: corrupted (document index runs {int(doc_idx[0])}..{int(doc_idx[-1])}, "
            f"expected 0..{sequences})"
        )


def scan_tokens(bin_path: str | Path, dtype: np.dtype) -> tuple[int, str]:
    """(max token id, checksum) of a .bin in one pass; max is -1 for an empty file."""
    digest = xxhash.xxh3_64()
    top = -1
    block_bytes = _CHUNK * dtype.itemsize
    with open(bin_path, "rb") as handle:
        while block := handle.read(block_bytes):
            digest.update(block)
            top = max(top, int(np.frombuffer(block, dtype=dtype).max()))
    return top, digest.hexdigest()


def integrity_record(prefix: str | Path) -> dict:
    """What manifest.json records per data file for the trainer's preflight."""
    summary = check_indexed_dataset(prefix)
    max_token_id, bin_checksum = scan_tokens(f"{prefix}.bin", summary.dtype)
    return {
        "documents": summary.sequences,
        "tokens": summary.tokens,
        "bin_bytes": summary.bin_bytes,
        "idx_bytes": summary.idx_bytes,
        "max_token_id": max_token_id,
        "checksum": {"algorithm": CHECKSUM, "bin": bin_checksum, "idx": xxh3_file(f"{prefix}.idx")},
    }


def verify_indexed_dataset(
    prefix: str | Path, vocab_size: int, mode: str, record: dict | None, manifest: Path | None = None
) -> None:
    """The trainer's check of one data file (see the module doc); `record` is its manifest entry."""
    if mode == "off":
        return
    bin_path, idx_path = Path(f"{prefix}.bin"), Path(f"{prefix}.idx")
    summary = check_indexed_dataset(prefix)
    record = record or {}
    where = f"{manifest}" if manifest else "manifest.json"
    for key, actual, path in (
        ("tokens", summary.tokens, bin_path),
        ("documents", summary.sequences, idx_path),
        ("bin_bytes", summary.bin_bytes, bin_path),
        ("idx_bytes", summary.idx_bytes, idx_path),
    ):
        if key in record and record[key] != actual:
            raise DataError(f"{path}: holds {actual} {key.replace('_', ' ')}, {where} records {record[key]}")
    checksums = record.get("checksum") or {}
    if checksums.get("algorithm") == CHECKSUM and checksums.get("idx") not in (None, xxh3_file(idx_path)):
        raise DataError(f"{idx_path}: content differs from {where} ({CHECKSUM} mismatch)")
    max_token_id = record.get("max_token_id")
    if mode == "full" or max_token_id is None:
        max_token_id, bin_checksum = scan_tokens(bin_path, summary.dtype)
        if mode == "full" and checksums.get("algorithm") == CHECKSUM and checksums.get("bin") != bin_checksum:
            raise DataError(f"{bin_path}: content differs from {where} ({CHECKSUM} mismatch)")
        source = "found by scanning the tokens"
    else:
        source = f"recorded in {where}"
    if max_token_id >= vocab_size:
        raise DataError(
            f"{bin_path}: token id {max_token_id} ({source}) is outside the vocabulary of data.tokenizer "
            f"(size {vocab_size}): the data was tokenized with another tokenizer or is corrupted"
        )
