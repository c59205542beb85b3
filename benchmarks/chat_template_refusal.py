"""How long `infi sft` takes to refuse a model whose own chat template cannot train (ordinary ChatML
without `{% generation %}` markers, which TRL has no training version of): the real SmolLM2 asset
with `prompt.chat_template: auto`. Times this tree and, as the baseline, a git revision checked out
beside it, in the same run and the same venv.

    .venv/bin/python benchmarks/chat_template_refusal.py [--baseline dc6dc4a] [--repeats 3]

Each run is a fresh process (imports included) and must exit 2 naming prompt.chat_template.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseline_tree import ROOT, checked_out

RUN = (
    "import sys, megatron_infi\n"
    "assert megatron_infi.__file__.startswith(sys.argv[1]), megatron_infi.__file__\n"
    "from megatron_infi.posttrain import sft\n"
    "sys.exit(sft.main(['--config', sys.argv[2]]))\n"
)


def time_refusal(tree: Path, config: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # time what a user sees: cached bytecode
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(tree), str(config)], cwd=tree, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode != 2 or "prompt.chat_template" not in done.stderr:
        raise SystemExit(
            f"{tree}: expected exit 2 naming prompt.chat_template, got {done.returncode}:\n{done.stderr}"
        )
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="dc6dc4a", help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from megatron_infi.assets import smollm2_dir

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "sft.jsonl"
        data.write_text(
            json.dumps(
                {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}
            )
            + "\n"
        )
        config = tmp / "sft.yaml"
        config.write_text(
            json.dumps(
                {
                    "model": str(smollm2_dir()),
                    "output_dir": str(tmp / "out"),
                    "phases": [{"name": "p", "data": [str(data)]}],
                }
            )
        )
        with checked_out(args.baseline, tmp / "baseline") as baseline:
            for name, tree in ((f"baseline {args.baseline}", baseline), ("this tree", ROOT)):
                times = [time_refusal(tree, config) for _ in range(args.repeats)]
                print(f"{name}: " + ", ".join(f"{t:.2f}" for t in times) + " s wall")


if __name__ == "__main__":
    main()
