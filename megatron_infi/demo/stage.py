"""What every demo stage shares: the demo dir, the failed-check error, and torchrun as on a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from megatron_infi.demo import REPO


@dataclass
class Demo:
    root: Path
    nproc: int = 2
    results: dict[str, dict] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


class DemoCheckFailed(RuntimeError):
    pass


def torchrun(module: str, args: list[str], nproc: int, log_path: Path) -> None:
    """Run `module` under torchrun exactly as on a cluster; stream its output to console and log."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        module,
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in proc.stdout:
            log.write(line)
            if (
                " | loss " in line
                or "validation loss" in line
                or "saved checkpoint" in line
                or "error" in line
            ):
                print("   ", line.rstrip(), flush=True)
        if proc.wait() != 0:
            raise DemoCheckFailed(f"{module} failed (exit {proc.returncode}); log: {log_path}")


def loss_trend(losses: list) -> str:
    values = [loss for _, loss in losses]
    return f"{values[0]:.2f} -> {values[-1]:.2f}" if values else "-"
