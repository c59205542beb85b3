"""Sandbox throughput: the 164 canonical HumanEval solutions through megatron_infi.scoring.code,
serially (1 worker) and in parallel (one worker per core, the default), with the pass count.

    PYTHONPATH=. python benchmarks/eval_sandbox.py [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time

from megatron_infi import assets
from megatron_infi.scoring.code import check_program, map_parallel, network_namespace_prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = parser.parse_args()
    with gzip.open(assets.humaneval_jsonl_gz(), "rt") as handle:
        problems = [json.loads(line) for line in handle]
    print(f"cores: {os.cpu_count()}  network namespace: {bool(network_namespace_prefix())}")
    for workers in args.workers:
        start = time.monotonic()
        results = list(
            map_parallel(
                lambda p: check_program(p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"]),
                problems,
                workers,
            )
        )
        wall = time.monotonic() - start
        passed = sum(r.passed for r in results)
        print(
            f"workers={workers}: {passed}/{len(problems)} passed in {wall:.1f}s "
            f"({len(problems) / wall:.1f} programs/s, mean {sum(r.seconds for r in results) / len(results):.3f}s each)"
        )


if __name__ == "__main__":
    main()
