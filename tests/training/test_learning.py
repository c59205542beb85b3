"""The model learns from context through attention: on a repeating token pattern where the current
token does not determine the next one, the loss must fall below the data's bigram entropy
H(next | current), the floor for any model that ignores earlier tokens (what a broken attention mask,
RoPE or label shift would leave)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from tests.training.launch import base_config, train_in_process


def _bigram_entropy(pattern: list[int]) -> float:
    pairs = Counter(zip(pattern, pattern[1:] + pattern[:1], strict=True))
    firsts = Counter(a for a, _ in pairs.elements())
    n = len(pattern)
    return -sum(c / n * math.log(c / firsts[a]) for (a, _), c in pairs.items())


def test_loss_goes_below_bigram_entropy(tmp_path, llama3_tokenizer_dir):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    # 24 positions over 6 tokens: each token recurs 4 times with different successors.
    pattern = rng.permutation(np.repeat(np.arange(1000, 1006), 4)).tolist()
    floor = _bigram_entropy(pattern)
    assert floor > 0.8
    prefix = tmp_path / "pattern"
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    for _ in range(4):
        doc = pattern * 30
        builder.add_document(torch.tensor(doc, dtype=torch.int32), [len(doc)])
    builder.finalize(f"{prefix}.idx")
    cfg = base_config(
        tmp_path / "run",
        llama3_tokenizer_dir,
        prefix,
        data={"seq_length": 32, "split": "100,0,0"},
        train={"train_iters": 100, "global_batch_size": 4, "micro_batch_size": 4},
        optimizer={"lr": 1e-2, "min_lr": 1e-3},
        schedule={"style": "constant", "warmup_iters": 5},
        logging={"log_interval": 10, "tensorboard": False},
    )
    _, losses = train_in_process(cfg)
    tail = losses[-5:]
    assert sum(tail) / len(tail) < floor - 0.4, (floor, tail)
