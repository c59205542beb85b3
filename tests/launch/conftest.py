"""Fakes for the cluster tools the launchers call: each records its argv and does the least a real one
would (scontrol expands a hostlist, srun runs its command, torchrun / accelerate start a worker)."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A stub training rank: says it is ready, waits for SIGUSR1 (the trainer checkpoints and exits 0 on
# it), records it, exits 0 (or STUB_SIGNAL_RC); without the signal it gives up after a while with exit code 3.
WORKER = """
import os, signal, sys, time
from pathlib import Path

out = Path(os.environ["FAKE_DIR"])
got = []
signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
(out / "worker.ready").write_text(str(os.getpid()))
deadline = time.time() + float(os.environ.get("STUB_WAIT_S", "30"))
while not got and time.time() < deadline and not (out / "release").exists():
    time.sleep(0.05)
if got:
    (out / "worker.signal").write_text("USR1")
    sys.exit(int(os.environ.get("STUB_SIGNAL_RC", "0")))
sys.exit(0 if (out / "release").exists() else 3)
"""

SCRIPTS = {
    # `scontrol show hostnames LIST` expands gpu[017-020] the way SLURM does; anything else is recorded.
    "scontrol": """#!/bin/bash
echo "$*" >> "$FAKE_DIR/scontrol.log"
if [[ $1 == show && $2 == hostnames ]]; then
  python3 - "$3" <<'PY'
import re, sys
m = re.fullmatch(r"(\\w+)\\[(\\d+)-(\\d+)\\]", sys.argv[1])
if m:
    width = len(m.group(2))
    for i in range(int(m.group(2)), int(m.group(3)) + 1):
        print(f"{m.group(1)}{i:0{width}d}")
else:
    print(sys.argv[1].split(",")[0])
PY
fi
""",
    # srun without a cluster: drop its options and become the command (one task).
    "srun": """#!/bin/bash
echo "$*" >> "$FAKE_DIR/srun.log"
while [[ $1 == -* ]]; do shift; done
exec "$@"
""",
    "torchrun": """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_DIR/torchrun.args"
env > "$FAKE_DIR/torchrun.env"
[[ -n ${STUB_WORKER:-} ]] || exit 0
"$STUB_PYTHON" "$FAKE_DIR/worker.py" &
wait $!
""",
    "accelerate": """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_DIR/accelerate.args"
[[ -n ${STUB_WORKER:-} ]] || exit 0
"$STUB_PYTHON" "$FAKE_DIR/worker.py" &
wait $!
""",
    "fake-python": """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_DIR/python.args"
""",
}


@pytest.fixture
def fake_cluster(tmp_path):
    """(env, fake dir): PATH starts with the fakes; no SLURM_* variable leaks in from outside."""
    fake = tmp_path / "fake"
    bin_dir = fake / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in SCRIPTS.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (fake / "worker.py").write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SRUN_"))}
    for name in (
        "NNODES",
        "NODE_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "GPUS_PER_NODE",
        "NPROC_PER_NODE",
        "OMP_NUM_THREADS",
        "INFI_CONFIG_CHECKED",
        "LOG_DIR",
        "VENV",
        "PYTHON",
    ):
        env.pop(name, None)
    env.update(
        PATH=f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        FAKE_DIR=str(fake),
        STUB_PYTHON=sys.executable,
        PYTHON=sys.executable,
        PYTHONPATH=str(REPO),
        LOG_DIR=str(tmp_path / "logs"),
        VENV=str(tmp_path / "no-venv"),
    )
    return env, fake


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
