"""Sandbox throughput: the 164 canonical HumanEval solutions through megatron_infi.scoring.code,
serially (1 worker) and in parallel (one worker per core, the default), with the pass count; each
also as plain subprocesses (`unsafe_no_sandbox`, the same limits without bwrap) in the same run,
which gives the sandbox's cost per program.

    PYTHONPATH=. python benchmarks/eval_sandbox.py [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import time

from megatron_infi import assets
from megatron_infi.scoring.code import check_program, map_parallel, sandbox_unavailable_reason


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = parser.parse_args()
    logging.getLogger("megatron_infi.scoring.code").setLevel(logging.ERROR)  # the unsafe baseline is wanted
    with gzip.open(assets.humaneval_jsonl_gz(), "rt") as handle:
        problems = [json.loads(line) for line in handle]
    print(f"cores: {os.cpu_count()}  sandbox: {sandbox_unavailable_reason() or 'bubblewrap'}")
    for workers in args.workers:
        for label, unsafe in (("bwrap", False), ("plain", True)):
            start = time.monotonic()
            results = list(
                map_parallel(
                    lambda p, unsafe=unsafe: check_program(
                        p["prompt"] + p["canonical_solution"],
                        p["test"],
                        p["entry_point"],
                        unsafe_no_sandbox=unsafe,
                    ),
                    problems,
                    workers,
                )
            )
            wall = time.monotonic() - start
            passed = sum(r.passed for r in results)
            print(
                f"workers={workers} {label}: {passed}/{len(problems)} passed in {wall:.1f}s "
                f"({len(problems) / wall:.1f} programs/s, mean {sum(r.seconds for r in results) / len(results):.3f}s "
                f"wall and {sum(r.cpu_seconds for r in results) / len(results):.3f}s CPU each)"
            )


if __name__ == "__main__":
    main()
