"""Documents/s per CPU core of the stage-1 (heuristic) filters and of the cheap stage-4/5 steps.

    python benchmarks/data_filters.py [--repeats 3] [--cpu 0]

Runs each step, pinned to one core, over the demo corpus (megatron_infi.demo.corpus: real news,
plot summaries, Wikipedia passages, maths solutions and stdlib code) with the demo config's scopes,
and the whole heuristic stage as the pipeline chains it. Best of `--repeats`.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from datatrove.data import Document


def load_documents(corpus) -> list[Document]:
    docs = []
    for source in corpus.sources:
        src = Path(source["path"])
        for file in [src] if src.is_file() else sorted(src.glob("*.jsonl")):
            for i, line in enumerate(file.read_bytes().splitlines()):
                try:
                    record = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if (
                    isinstance(record, dict)
                    and isinstance(record.get("text"), str)
                    and len(record["text"]) < 200_000
                ):
                    meta = {
                        "domain": source["domain"],
                        **{k: record[k] for k in ("path", "language") if k in record},
                    }
                    docs.append(Document(text=record["text"], id=f"{source['name']}/{i}", metadata=meta))
    return docs


def time_step(step, docs: list[Document], repeats: int) -> tuple[float, int]:
    best, kept = float("inf"), 0
    for _ in range(repeats):
        batch = copy.deepcopy(docs)
        start = time.perf_counter()
        kept = sum(1 for _ in step.run(iter(batch)))
        best = min(best, time.perf_counter() - start)
    return best, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    from megatron_infi.config.core import from_dict, load_yaml
    from megatron_infi.data_processing.pipelines.config import PretrainDataConfig
    from megatron_infi.data_processing.pipelines.pretrain import _heuristic_steps
    from megatron_infi.data_processing.steps.decontaminate import DecontaminationFilter
    from megatron_infi.data_processing.steps.quality import CodeQualityFilter
    from megatron_infi.demo.corpus import build

    root = Path(tempfile.mkdtemp(prefix="bench-filters-"))
    corpus = build(root / "corpus")
    docs = load_documents(corpus)
    demo = load_yaml(Path(__file__).resolve().parents[1] / "launch/configs/data/demo.yaml")
    cfg = from_dict(
        PretrainDataConfig,
        {
            "output_dir": str(root),
            "sources": [{"name": "x", "path": str(root)}],
            "heuristic": demo["heuristic"],
        },
    )
    steps = _heuristic_steps(cfg)
    steps.append(CodeQualityFilter(["code"]))
    steps.append(DecontaminationFilter(corpus.benchmarks, 10, str(root / "decontamination")))
    steps[-1].index  # noqa: B018 - build the benchmark index before the clock starts

    stamp = dt.datetime.now().isoformat(timespec="minutes")
    print(
        f"{stamp}, pinned to core {args.cpu}, {len(docs)} documents "
        f"({sum(len(d.text) for d in docs) / 1e6:.1f} M chars), best of {args.repeats}"
    )
    print("| step | scope | docs in | kept | docs/s per core |")
    print("|---|---|---:|---:|---:|")
    for step in steps:
        seconds, kept = time_step(step, docs, args.repeats)
        scope = "/".join(sorted(getattr(step, "domains", []))) or "all"
        print(f"| {step.name} | {scope} | {len(docs)} | {kept} | {len(docs) / seconds:,.0f} |")

    class Chain:
        def run(self, data):
            for step in steps[:-2]:
                data = step.run(data)
            return data

    seconds, kept = time_step(Chain(), docs, args.repeats)
    print(
        f"| whole heuristic stage (chained) | as configured | {len(docs)} | {kept} | {len(docs) / seconds:,.0f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
