"""Throughput of the SFT selection steps on real packaged data (CHAMP, PaLM 2 attempts, GSM-Symbolic,
HumanEval, TruthfulQA, ASDiv, spaCy sentences), on whatever machine runs it.

    PYTHONPATH=. python benchmarks/sft_select_throughput.py [--embed 400] [--out /tmp/sft_bench]

Baselines measured in the same run: the encoder at its own 256-token limit vs the 128 tokens the
pipeline uses, and scikit-learn K-means vs faiss. Prints a markdown table (records/s).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="/tmp/sft_bench")
    parser.add_argument("--embed", type=int, default=400, help="prompts embedded per encoder setting")
    parser.add_argument("--clusters", type=int, default=64)
    args = parser.parse_args()

    from megatron_infi.data.tokenizer import build_llama3_tokenizer, load_tokenizer
    from megatron_infi.data_processing.decontamination.embedding import SentenceEncoder
    from megatron_infi.data_processing.sft.decontaminate import BenchmarkSet
    from megatron_infi.data_processing.sft.diversity import kmeans_labels, near_duplicates
    from megatron_infi.data_processing.sft.filters import RuleFilter
    from megatron_infi.data_processing.sft.formats import read_records
    from megatron_infi.data_processing.sft.records import prompt_text, response_text
    from megatron_infi.demo.sft_inputs import build_demo_inputs
    from megatron_infi.utils import SkipCounter

    out = Path(args.out)
    sizes = {"champ": 270, "gsm": 600, "humaneval": 164, "truthfulqa": 164, "asdiv": 300, "per_language": 4}
    files = build_demo_inputs(out / "inputs", sizes)
    benchmarks = [str(files["champ_bench"]), str(files["gsm_test"])]
    inputs = [p for name, p in files.items() if name not in ("champ_bench", "gsm_test")]
    rows = []

    records, seconds = timed(lambda: [r for p in inputs for r in read_records(p, SkipCounter())])
    n = len(records)
    rows.append(("read + convert (7 files, 5 formats)", n, seconds))
    rules = RuleFilter()
    _, seconds = timed(lambda: [rules.language_reason(r) for r in records])
    rows.append(("language ID (fastText lid.176)", n, seconds))
    tokenizer = load_tokenizer(build_llama3_tokenizer(out / "tokenizer")).hf
    texts = [response_text(r) for r in records]
    lengths, seconds = timed(
        lambda: [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    )
    rows.append(("response tokens (Llama-3 tokenizer, batched)", n, seconds))
    for record, length in zip(records, lengths, strict=True):
        record["meta"]["response_tokens"] = length
    _, seconds = timed(lambda: [rules.response_reason(r) for r in records])
    rows.append(("truncation + final-answer rules", n, seconds))

    prompts = [prompt_text(r) for r in records]
    sample = prompts[:: max(1, len(prompts) // args.embed)][: args.embed]
    vectors = None
    for limit in (256, 128):
        encoder = SentenceEncoder(max_seq_length=limit, batch_size=64)
        _ = encoder.model  # load outside the timing
        vectors, seconds = timed(lambda encoder=encoder: encoder.encode(sample))
        rows.append(
            (
                f"prompt embeddings, MiniLM-L6, {limit} tokens{' (baseline)' if limit == 256 else ''}",
                len(sample),
                seconds,
            )
        )
    tiled = np.concatenate([vectors] * max(1, 4000 // len(vectors)))[:4000]
    tiled = tiled + 0.01 * np.random.default_rng(0).normal(size=tiled.shape).astype(np.float32)
    for backend in ("sklearn", "faiss"):
        try:
            _, seconds = timed(lambda backend=backend: kmeans_labels(tiled, args.clusters, 0, backend))
        except ImportError:
            continue
        rows.append(
            (
                f"K-means k={args.clusters}, {backend}{' (baseline)' if backend == 'sklearn' else ''}",
                len(tiled),
                seconds,
            )
        )
    _, seconds = timed(lambda: near_duplicates(prompts, list(range(len(prompts))), 20))
    rows.append(("20-gram near-duplicates (one pass)", n, seconds))
    bench = BenchmarkSet.build(benchmarks, 15, 0.9, SentenceEncoder(max_seq_length=128))
    _, seconds = timed(lambda: bench.check(records[: len(sample)], vectors))
    rows.append(("decontamination: 15-gram + cosine (embeddings given)", len(sample), seconds))

    print(f"device: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end")
    print("| step | records | seconds | records/s |")
    print("|---|---|---|---|")
    for name, count, seconds in rows:
        print(f"| {name} | {count} | {seconds:.2f} | {count / seconds:,.0f} |")


if __name__ == "__main__":
    main()
