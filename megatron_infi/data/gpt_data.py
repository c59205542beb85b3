"""Training data: megatron-core's BlendedMegatronDatasetBuilder + GPTDataset over `.bin/.idx`
prefixes with weights, and a resumable micro-batch iterator.

Sample order is a pure function of (dataset seed, consumed samples): global step `s`, micro-batch
`m`, data-parallel rank `r` read samples `s*GBS + m*(MBS*DP) + r*MBS + [0, MBS)`, exactly the
layout of Megatron-LM's pretraining sampler. Resuming at `consumed_samples` is therefore exact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from megatron_infi.config.core import ConfigError
from megatron_infi.config.inputs import InputCheck
from megatron_infi.config.schema import TrainConfig
from megatron_infi.data.indexed import verify_indexed_dataset
from megatron_infi.data.tokenizer import Tokenizer, TokenizerError, load_tokenizer
from megatron_infi.errors import DataError
from megatron_infi.utils import check_across_ranks


def resolve_blend(cfg: TrainConfig) -> tuple[list[str], list[float]]:
    return [prefix for _, prefix in cfg.data.prefixes()], [entry.weight for entry in cfg.data.blend]


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
    """What can be wrong with the config's data, checked on every rank before a model is built:
    paths, the tokenizer against the model and the data's manifest. File contents: `verify_data`."""
    if cfg.data.mock:
        return MockTokenizer(cfg.model.vocab_size)
    cfg.data.check_inputs(InputCheck(), "data.")
    try:
        tokenizer = load_tokenizer(cfg.data.tokenizer)
        vocab = tokenizer.vocab_size
    except (TokenizerError, OSError, ValueError) as err:
        raise ConfigError("data.tokenizer", str(err)) from None
    if vocab > cfg.model.vocab_size:
        raise ConfigError(
            "data.tokenizer", f"vocab size {vocab} is larger than model.vocab_size={cfg.model.vocab_size}"
        )
    for prefix in resolve_blend(cfg)[0]:
        manifest = _read_manifest(prefix)
        recorded = manifest.get("tokenizer", {}) if manifest else {}
        sha = recorded.get("sha256") if isinstance(recorded, dict) else None
        if sha and sha != tokenizer.sha256:
            raise ConfigError(
                "data.tokenizer",
                f"{tokenizer.path}/tokenizer.json differs from the tokenizer {_manifest_path(prefix)} "
                "was tokenized with",
            )
    return tokenizer


def _manifest_path(prefix: str) -> Path:
    return Path(prefix).parent / "manifest.json"


def _read_manifest(prefix: str) -> dict | None:
    path = _manifest_path(prefix)
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: expected a JSON object")
    return manifest


def _manifest_record(manifest: dict | None, prefix: str) -> dict | None:
    """The manifest's entry for this file (the data pipeline writes one per domain)."""
    domains = (manifest or {}).get("domains")
    if not isinstance(domains, dict):
        return None
    name = Path(prefix).name
    return next((r for r in domains.values() if isinstance(r, dict) and r.get("prefix") == name), None)


def verify_data(cfg: TrainConfig, vocab_size: int) -> None:
    """`data.verify` over the blend's files (megatron_infi.data.indexed), split across the ranks;
    every rank raises the first problem found."""
    if cfg.data.mock or cfg.data.verify == "off":
        return

    def check(prefix: str) -> None:
        record = _manifest_record(_read_manifest(prefix), prefix)
        verify_indexed_dataset(prefix, vocab_size, cfg.data.verify, record, _manifest_path(prefix))

    check_across_ranks(resolve_blend(cfg)[0], check, (DataError,))


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
    # eval_at_start re-reads the first validation's windows, so it needs samples only on its own
    evals = train.train_iters // train.eval_interval + 1 if train.eval_interval else int(train.eval_at_start)
    evals *= train.eval_iters
    sizes = [train.train_iters * train.global_batch_size, evals * train.global_batch_size, 0]
    cache = cfg.data.cache_dir or os.path.join(cfg.run_dir, "cache", "datasets")
    config = GPTDatasetConfig(
        random_seed=train.seed,
        sequence_length=cfg.data.seq_length,
        # one prefix without weights is one dataset, not a BlendedDataset of one (megatron-core warns)
        blend=(prefixes, weights if len(prefixes) > 1 else None) if prefixes else None,
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
