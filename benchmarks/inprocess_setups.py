"""What repeated in-process model-parallel setups (the test suite's in-process trainers, a notebook)
leave behind: threads, and the CPU those threads burn while the process does nothing. Runs this
tree and, as the baseline, a git revision checked out beside it, in the same run and the same venv.

    .venv/bin/python benchmarks/inprocess_setups.py [--baseline 48d8423] [--setups 22] [--idle 10]

22 setups is what one `make test` session did before the fix (447 leaked gloo groups / ~20 each).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from baseline_tree import ROOT, checked_out

RUN = """
import json, os, sys, time
import megatron_infi
assert megatron_infi.__file__.startswith(sys.argv[1]), megatron_infi.__file__
from megatron_infi.training import patches
patches.apply()
from megatron_infi.training.distributed import init_model_parallel
for _ in range(int(sys.argv[2])):
    init_model_parallel(1, 1)
threads = len(os.listdir(f"/proc/{os.getpid()}/task"))
cpu, wall = time.process_time(), time.perf_counter()
time.sleep(float(sys.argv[3]))
idle_cores = (time.process_time() - cpu) / (time.perf_counter() - wall)
print(json.dumps({"threads": threads, "idle_cores": idle_cores}))
"""


def measure(tree: Path, setups: int, idle: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    env.pop("RANK", None)
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(tree), str(setups), str(idle)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="48d8423", help="git revision to compare with")
    parser.add_argument("--setups", type=int, default=22)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idling measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, checked_out(args.baseline, Path(tmp) / "baseline") as baseline:
        print(f"| tree | setups | threads after | CPU cores busy while idle ({args.idle:g} s) |")
        print("|---|---|---|---|")
        for name, tree in ((f"baseline {args.baseline}", baseline), ("this tree", ROOT)):
            got = measure(tree, args.setups, args.idle)
            print(f"| {name} | {args.setups} | {got['threads']} | {got['idle_cores']:.2f} |")


if __name__ == "__main__":
    main()
