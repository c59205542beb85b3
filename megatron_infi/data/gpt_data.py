"""Training data: megatron-core's BlendedMegatronDatasetBuilder + GPTDataset over `.bin/.idx`
prefixes with weights, and a resumable micro-batch iterator.

Sample order is a pure function of (dataset seed, consumed samples): global step `s`, micro-batch
`m`, data-parallel rank `r` read samples `s*GBS + m*(MBS*DP) + r*MBS + [0, MBS)`, exactly the
layout of Megatron-LM's pretraining sampler. Resuming at `consumed_samples` is therefore exact.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from megatron_infi.config.core import ConfigError
from megatron_infi.config.schema import TrainConfig
from megatron_infi.data.tokenizer import Tokenizer, TokenizerError, load_tokenizer
from megatron_infi.errors import DataError

_IDX_HEADER = b"MMIDIDX\x00\x00"
_DTYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 4, 7: 8, 8: 2}


def check_indexed_dataset(prefix: str | Path) -> tuple[int, int]:
    """Validate `<prefix>.idx` / `<prefix>.bin` without reading the data: header, counts, and that
    both files have exactly the sizes the index implies. Returns (sequences, tokens)."""
    idx_path, bin_path = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    for path in (idx_path, bin_path):
        if not path.is_file():
            raise DataError(f"{path}: file not found")
    idx_size = idx_path.stat().st_size
    with open(idx_path, "rb") as handle:
        head = handle.read(34)
        if len(head) < 34 or head[:9] != _IDX_HEADER:
            raise DataError(f"{idx_path}: not a Megatron index file (bad or truncated header)")
        (version,) = struct.unpack("<Q", head[9:17])
        (dtype_code,) = struct.unpack("<B", head[17:18])
        sequences, documents = struct.unpack("<QQ", head[18:34])
        if version != 1 or dtype_code not in _DTYPE_SIZES:
            raise DataError(f"{idx_path}: unsupported version {version} or dtype code {dtype_code}")
        expected = 34 + sequences * 4 + sequences * 8 + documents * 8
        if idx_size != expected:
            raise DataError(
                f"{idx_path}: truncated or corrupted ({idx_size} bytes, the header implies {expected})"
            )
        tokens = 0
        bin_expected = 0
        if sequences:
            handle.seek(34)
            sizes = np.frombuffer(handle.read(sequences * 4), dtype=np.int32)
            pointers = np.frombuffer(handle.read(sequences * 8), dtype=np.int64)
            tokens = int(sizes.sum(dtype=np.int64))
            bin_expected = int(pointers[-1]) + int(sizes[-1]) * _DTYPE_SIZES[dtype_code]
            if (sizes < 0).any() or (np.diff(pointers) < 0).any():
                raise DataError(f"{idx_path}: corrupted (negative sizes or decreasing pointers)")
    bin_size = bin_path.stat().st_size
    if bin_size != bin_expected:
        raise DataError(
            f"{bin_path}: truncated or corrupted ({bin_size} bytes, {idx_path.name} implies {bin_expected})"
        )
    return sequences, tokens


def resolve_blend(cfg: TrainConfig) -> tuple[list[str], list[float]]:
    prefixes, weights = [], []
    for i, entry in enumerate(cfg.data.blend):
        prefix = entry.prefix if entry.prefix is not None else os.path.join(cfg.data.dir or "", entry.domain)
        prefixes.append(prefix)
        weights.append(entry.weight)
        if not Path(f"{prefix}.bin").exists() or not Path(f"{prefix}.idx").exists():
            field = f"data.blend[{i}].{'prefix' if entry.prefix is not None else 'domain'}"
            raise ConfigError(field, f"no indexed dataset at {prefix}.bin/.idx")
    return prefixes, weights


@dataclass
class MockTokenizer:
    """Stands in for the tokenizer of `data.mock` runs (random tokens over the model's vocab)."""

    vocab_size: int
    path: str = "mock"
    sha256: str = ""

    @property
    def eod_id(self) -> int:
        return self.vocab_size - 1


def preflight_data(cfg: TrainConfig) -> Tokenizer | MockTokenizer:
    """Everything about the data that can be wrong, checked before a model is built."""
    if cfg.data.mock:
        return MockTokenizer(cfg.model.vocab_size)
    try:
        tokenizer = load_tokenizer(cfg.data.tokenizer)
        vocab = tokenizer.vocab_size
    except (TokenizerError, OSError, ValueError) as err:
        raise ConfigError("data.tokenizer", str(err)) from None
    if vocab > cfg.model.vocab_size:
        raise ConfigError(
            "data.tokenizer", f"vocab size {vocab} is larger than model.vocab_size={cfg.model.vocab_size}"
        )
    prefixes, _ = resolve_blend(cfg)
    for prefix in prefixes:
        check_indexed_dataset(prefix)
        manifest = Path(prefix).parent / "manifest.json"
        if manifest.exists():
            _check_manifest(manifest, tokenizer)
    return tokenizer


def _check_manifest(path: Path, tokenizer: Tokenizer) -> None:
    try:
        recorded = json.loads(path.read_text()).get("tokenizer", {})
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg})") from None
    sha = recorded.get("sha256") if isinstance(recorded, dict) else None
    if sha and sha != tokenizer.sha256:
        raise ConfigError(
            "data.tokenizer",
            f"{tokenizer.path}/tokenizer.json differs from the tokenizer {path} was tokenized with",
        )


@dataclass
class _MegatronTokenizerView:
    """What GPTDataset reads from a tokenizer: EOD, vocab size, and identifiers for its cache hash.
    No `pad`: GPTDataset then uses a sentinel id that never occurs in the data."""

    eod: int
    vocab_size: int
    path: str

    @property
    def unique_identifiers(self) -> dict:
        return {"class": "hf", "path": self.path, "eod": self.eod, "vocab_size": self.vocab_size}


def build_datasets(cfg: TrainConfig, tokenizer: Tokenizer, data_parallel_size: int):
    """(train, valid) GPTDatasets sized for the whole run; index caches inside the run dir."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig, MockGPTDataset

    prefixes, weights = ([], []) if cfg.data.mock else resolve_blend(cfg)
    train = cfg.train
    evals = (train.train_iters // train.eval_interval + 1) * train.eval_iters if train.eval_interval else 0
    sizes = [train.train_iters * train.global_batch_size, evals * train.global_batch_size, 0]
    cache = cfg.data.cache_dir or os.path.join(cfg.run_dir, "cache", "datasets")
    config = GPTDatasetConfig(
        random_seed=train.seed,
        sequence_length=cfg.data.seq_length,
        blend=(prefixes, weights) if prefixes else None,
        split=cfg.data.split,
        path_to_cache=cache,
        tokenizer=_MegatronTokenizerView(tokenizer.eod_id, tokenizer.vocab_size, str(tokenizer.path)),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=cfg.data.eod_mask_loss,
        create_attention_mask=False,
        data_parallel_size=data_parallel_size,
    )
    dataset_cls = MockGPTDataset if cfg.data.mock else GPTDataset
    train_ds, valid_ds, _ = BlendedMegatronDatasetBuilder(dataset_cls, sizes, lambda: True, config).build()
    return train_ds, valid_ds


class MicroBatchSampler(torch.utils.data.Sampler):
    """Yields this DP rank's micro-batches of sample indices, starting after `consumed_samples`."""

    def __init__(
        self, total_samples: int, consumed_samples: int, micro_batch_size: int, dp_rank: int, dp_size: int
    ):
        self.total = total_samples
        self.consumed = consumed_samples
        self.mbs = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size

    def __iter__(self):
        step = self.mbs * self.dp_size
        for start in range(self.consumed, self.total - step + 1, step):
            first = start + self.dp_rank * self.mbs
            yield list(range(first, first + self.mbs))

    def __len__(self) -> int:
        return max(0, (self.total - self.consumed) // (self.mbs * self.dp_size))


def micro_batch_iterator(dataset, consumed_samples: int, cfg: TrainConfig, dp_rank: int, dp_size: int):
    """Infinite-free iterator of micro-batches (dicts of tensors), or None for an empty split."""
    if dataset is None or len(dataset) == 0:
        return None
    sampler = MicroBatchSampler(len(dataset), consumed_samples, cfg.train.micro_batch_size, dp_rank, dp_size)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.data.num_workers > 0,
    )
    return iter(loader)
