"""Launch a process tree (torchrun and its ranks) so that a timed-out or interrupted test takes the
whole tree down: subprocess.run kills only torchrun, whose ranks then train on as orphans and slow
every later test."""

from __future__ import annotations

import os
import signal
import subprocess


def run_tree(cmd: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs) in a session of
    its own, killed as a whole if the wait ends for any reason but the process's exit."""
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException:  # TimeoutExpired, pytest-timeout's signal, Ctrl-C
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
