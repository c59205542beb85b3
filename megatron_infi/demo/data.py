"""The data stage of `make demo`: bundled real corpus -> recall + quality models -> five stages -> .bin/.idx.

    python -m megatron_infi.demo.data [OUT_DIR]        # default runs/demo/data
    from megatron_infi.demo.data import run; manifest_path = run("runs/demo/data")

Writes under OUT_DIR: corpus/ (demo_corpus.build), tokenizer/ (Llama-3), models/ (recall.bin,
edu.json, math_quality.json with their metrics), out/ (the pipeline run: <domain>.bin/.idx,
manifest.json, decontamination_report.json, report.md, funnel.png). Re-running resumes / reuses.
"""

from __future__ import annotations

import sys
from pathlib import Path

from megatron_infi.data.tokenizer import build_llama3_tokenizer
from megatron_infi.data_processing.pipelines import pretrain, train_quality, train_recall
from megatron_infi.data_processing.pipelines.config import PretrainDataConfig
from megatron_infi.demo import corpus as demo_corpus
from megatron_infi.demo import demo_config


def run(
    out_dir: str | Path = "runs/demo/data",
    size: str = "demo",
    tokenizer_dir: str | Path | None = None,
    tasks: int = 2,
    workers: int = 1,
) -> Path:
    """Build everything the data stage needs under `out_dir` and run it; returns the manifest path."""
    out = Path(out_dir).resolve()
    corpus = demo_corpus.build(out / "corpus", size=size)
    tokenizer = Path(tokenizer_dir) if tokenizer_dir else build_llama3_tokenizer(out / "tokenizer")
    models = out / "models"
    if not (models / "recall.bin").is_file():
        train_recall.train(
            demo_config(
                train_recall.TrainRecallConfig,
                "data/demo_recall.yaml",
                {"output": str(models / "recall.bin"), "seeds": corpus.seeds, "negatives": corpus.negatives},
            )
        )
    for name, labelled in (("edu", "edu"), ("math_quality", "math_quality")):
        if not (models / f"{name}.json").is_file():
            train_quality.train(
                demo_config(
                    train_quality.TrainQualityConfig,
                    f"data/demo_{name}.yaml",
                    {"output": str(models / f"{name}.json"), "data": corpus.labelled[labelled]},
                )
            )
    cfg = demo_config(
        PretrainDataConfig,
        "data/demo.yaml",
        {
            "output_dir": str(out / "out"),
            "sources": corpus.sources,
            "recall.model_path": str(models / "recall.bin"),
            "quality.edu.model_path": str(models / "edu.json"),
            "quality.math.model_path": str(models / "math_quality.json"),
            "decontamination.benchmarks": corpus.benchmarks,
            "tokenize.tokenizer": str(tokenizer),
            "executor.tasks": tasks,
            "executor.workers": workers,
        },
    )
    root = pretrain.run(cfg)
    return root / "manifest.json"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    manifest = run(argv[0] if argv else "runs/demo/data")
    print(f"data stage done: {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
