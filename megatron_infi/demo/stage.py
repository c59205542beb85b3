"""What every demo stage shares: the demo dir, the failed-check error, and torchrun as on a cluster."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def stage_console(log_path: Path):
    """Send what libraries print on stderr during a stage (datatrove's per-task stats, progress bars)
    to the stage's console.log, so the demo's console keeps one screen per stage; our warnings
    (`warning: ...` lines) are echoed back, and the log's tail if the stage fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            lines = log_path.read_text(errors="replace").splitlines()
            shown = lines[-30:] if failed else [line for line in lines if line.startswith("warning:")]
            for line in shown:
                print(line, file=sys.stderr)
            if lines:
                print(f"   (library output: {log_path})", flush=True)
