"""Tokenization throughput per CPU core into Megatron `.bin/.idx`, four ways on the same real corpus.

    python benchmarks/data_tokenize.py [--repeats 3] [--cpu 0] [--out results.jsonl]

Everything runs pinned to one core (children inherit the affinity) with one tokenizer thread, so the
numbers are tokens/s per core:

- `limit`: the tokenizer's raw `encode_batch` on texts already in memory (no JSON, no writing);
- `ours`: datatrove's JsonlReader -> DomainMegatronTokenizer (per-domain shards) -> merge into
  `<domain>.bin/.idx` with megatron-core's IndexedDatasetBuilder, i.e. what the pipeline does;
- `datatrove DocumentTokenizer`: datatrove's own tokenizer step (its .ds format, shuffled, with index);
- `megatron-style preprocess_data`: a faithful small re-implementation of Megatron-LM's
  tools/preprocess_data.py (multiprocessing Pool with an HF AutoTokenizer per worker, `imap(chunksize=32)`
  over JSON lines, one `tokenize()` per document + EOD, IndexedDatasetBuilder.add_document in the parent).

The corpus is the demo corpus (megatron_infi.demo.corpus, ~4 MB of real text) repeated `--copies`
times, the tokenizer Llama-3. Times include loading the tokenizer, except for `limit`.
Each method runs `--repeats` times, interleaved; the best run is reported.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before `tokenizers` starts its thread pool
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

EOD = "<|end_of_text|>"


def write_input(corpus_dir: Path, path: Path, copies: int) -> int:
    """All demo-corpus documents, `copies` times, in one JSONL file (text + domain); returns the count."""
    from megatron_infi.demo.corpus import build

    corpus = build(corpus_dir)
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for source in corpus.sources:
            if source["name"] == "bad":
                continue
            src = Path(source["path"])
            for file in [src] if src.is_file() else sorted(src.glob("*.jsonl")):
                for line in file.read_text(encoding="utf-8").splitlines():
                    text = json.loads(line)["text"]
                    if not text.strip():
                        continue  # datatrove's readers skip empty documents; keep the inputs identical
                    for _ in range(copies):
                        out.write(json.dumps({"text": text, "metadata": {"domain": source["domain"]}}) + "\n")
                        count += 1
    return count


def run_limit(input_path: Path, tokenizer_json: str, work: Path) -> tuple[int, float]:
    from tokenizers import Tokenizer

    texts = [json.loads(line)["text"] for line in input_path.read_text(encoding="utf-8").splitlines()]
    tokenizer = Tokenizer.from_file(tokenizer_json)
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), 1000):
        tokens += sum(len(e.ids) + 1 for e in tokenizer.encode_batch(texts[i : i + 1000]))
    return tokens, time.perf_counter() - start


def run_ours(input_path: Path, tokenizer_json: str, work: Path) -> tuple[int, float]:
    from datatrove.pipeline.readers import JsonlReader

    from megatron_infi.data_processing.pipelines.finalize import merge_domain_shards
    from megatron_infi.data_processing.steps.tokenize import DomainMegatronTokenizer

    start = time.perf_counter()
    reader = JsonlReader(str(input_path.parent), glob_pattern=input_path.name)
    step = DomainMegatronTokenizer(
        str(work / "shards"), tokenizer_name_or_path=tokenizer_json, eos_token=EOD, batch_size=1000
    )
    for _ in step.run(reader.run()):
        pass
    tokens = 0
    for shard_dir in sorted((work / "shards").iterdir()):
        tokens += merge_domain_shards(shard_dir, work / shard_dir.name)["tokens"]
    return tokens, time.perf_counter() - start


def run_datatrove(input_path: Path, tokenizer_json: str, work: Path) -> tuple[int, float]:
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    start = time.perf_counter()
    reader = JsonlReader(str(input_path.parent), glob_pattern=input_path.name)
    step = DocumentTokenizer(
        str(work / "ds"), tokenizer_name_or_path=tokenizer_json, eos_token=EOD, batch_size=1000
    )
    result = step.run(reader.run())
    if result is not None:
        for _ in result:
            pass
    elapsed = time.perf_counter() - start
    return int(step.stats["tokens"].total), elapsed


class MegatronStyleEncoder:
    """tools/preprocess_data.py's Encoder: a tokenizer per worker, json.loads + tokenize + EOD per line."""

    def __init__(self, tokenizer_dir: str):
        self.tokenizer_dir = tokenizer_dir

    def initializer(self):
        from transformers import AutoTokenizer

        MegatronStyleEncoder.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        MegatronStyleEncoder.eod = MegatronStyleEncoder.tokenizer.convert_tokens_to_ids(EOD)

    def encode(self, json_line: str):
        text = json.loads(json_line)["text"]
        ids = MegatronStyleEncoder.tokenizer(text).input_ids + [MegatronStyleEncoder.eod]
        return ids, len(json_line)


def run_megatron_style(input_path: Path, tokenizer_json: str, work: Path) -> tuple[int, float]:
    import torch
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    start = time.perf_counter()
    encoder = MegatronStyleEncoder(str(Path(tokenizer_json).parent))
    tokens = 0
    with (
        open(input_path, encoding="utf-8") as fin,
        multiprocessing.Pool(1, initializer=encoder.initializer) as pool,
    ):
        builder = IndexedDatasetBuilder(str(work / "megatron.bin"), dtype=DType.optimal_dtype(128256))
        for ids, _ in pool.imap(encoder.encode, fin, 32):
            builder.add_document(torch.tensor(ids), [len(ids)])
            tokens += len(ids)
        builder.finalize(str(work / "megatron.idx"))
    return tokens, time.perf_counter() - start


METHODS = {
    "limit: raw encode_batch (in memory)": run_limit,
    "ours: DomainMegatronTokenizer + merge": run_ours,
    "datatrove DocumentTokenizer": run_datatrove,
    "megatron-style preprocess_data (1 worker)": run_megatron_style,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0, help="the core everything is pinned to")
    parser.add_argument(
        "--copies", type=int, default=3, help="corpus repeats (amortises per-run fixed costs)"
    )
    parser.add_argument("--out", help="append JSON lines here")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    # imported before any clock starts: import time is not tokenization time
    import datatrove.pipeline.readers  # noqa: F401
    import datatrove.pipeline.tokens  # noqa: F401
    import megatron.core.datasets.indexed_dataset  # noqa: F401
    import transformers  # noqa: F401

    import megatron_infi.data_processing.pipelines.finalize  # noqa: F401
    from megatron_infi.data.tokenizer import build_llama3_tokenizer
    from megatron_infi.utils import set_run_caches

    root = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    try:
        set_run_caches(root)
        tokenizer_json = str(build_llama3_tokenizer(root / "tokenizer") / "tokenizer.json")
        input_path = root / "input" / "corpus.jsonl"
        input_path.parent.mkdir()
        docs = write_input(root / "corpus", input_path, args.copies)
        size = input_path.stat().st_size
        best: dict[str, tuple[int, float]] = {}
        for _ in range(args.repeats):
            for name, fn in METHODS.items():
                work = root / "work"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir()
                tokens, seconds = fn(input_path, tokenizer_json, work)
                if name not in best or seconds < best[name][1]:
                    best[name] = (tokens, seconds)
        limit = best["limit: raw encode_batch (in memory)"]
        baseline = best["megatron-style preprocess_data (1 worker)"]
        stamp = dt.datetime.now().isoformat(timespec="minutes")
        print(
            f"{stamp}, {platform.processor() or platform.machine()}, pinned to core {args.cpu}, "
            f"{docs} documents, {size / 1e6:.1f} MB JSONL, {limit[0]} tokens, best of {args.repeats}"
        )
        print("| method | tokens | seconds | tokens/s per core | vs megatron-style | vs limit |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, (tokens, seconds) in best.items():
            rate = tokens / seconds
            row = {
                "date": stamp,
                "method": name,
                "tokens": tokens,
                "seconds": round(seconds, 3),
                "tokens_per_s_per_core": round(rate),
                "vs_megatron_style": round(rate / (baseline[0] / baseline[1]), 3),
                "vs_limit": round(rate / (limit[0] / limit[1]), 3),
                "docs": docs,
                "bytes": size,
            }
            print(
                f"| {name} | {tokens:,} | {seconds:.2f} | {rate:,.0f} | {row['vs_megatron_style']:.2f}x | "
                f"{row['vs_limit']:.2f}x |"
            )
            if args.out:
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
        assert len({tokens for tokens, _ in best.values()}) == 1, f"methods disagree on token counts: {best}"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
