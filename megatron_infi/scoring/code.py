"""A sandbox for model-written Python: run it, against tests, and say how it ended.

Each program runs in a fresh temp dir as a child `python -I` in its own session (process group),
with a clean environment and:
- time: a wall-clock limit (the whole process group is SIGKILLed) and an RLIMIT_CPU limit;
- memory: RLIMIT_AS (allocation fails with MemoryError), RLIMIT_FSIZE caps files and output;
- no network: a fresh network namespace (`unshare -n`) where the host allows one, and, always, a
  guard installed before the program's first line (a `sys.addaudithook` hook, which the program
  cannot remove) that stops it at once on socket creation, fork / exec / spawn / subprocess, signals
  to other processes, ctypes symbol lookup (the way around all the above), and any write, delete or
  rename outside its temp dir.
A stopped program is reported as `blocked` with the event in stderr. The guard is what bounds forks:
we run as root, where RLIMIT_NPROC does not apply.

Many programs run in parallel from threads: nothing here uses `preexec_fn` (unsafe with threads);
the child sets its own limits before running the program.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

STATUSES = ("passed", "failed", "timeout", "memory", "blocked", "error")
BLOCKED_EXIT = 113
BLOCKED_MARK = "sandbox: blocked"
OUTPUT_LIMIT_BYTES = 16 << 20
KEEP_OUTPUT_CHARS = 8192
# Python ignores SIGXFSZ, so hitting RLIMIT_FSIZE surfaces as this error instead of the signal.
_FILE_TOO_LARGE = "[Errno 27] File too large"

# Runs in the child before the program: limits, then the guard, then the program as __main__.
# argv: sandbox dir, memory bytes, cpu seconds, file-size bytes.
_BOOTSTRAP = r"""
import os, sys, resource
workdir, mem, cpu, fsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
if mem > 0:
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
sys.dont_write_bytecode = True
os.chdir(workdir)
root = os.path.realpath(workdir) + os.sep
BLOCK = {"socket.__new__", "socket.socket", "socket.connect", "socket.bind", "socket.sendto",
         "socket.getaddrinfo", "os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp", "os.system",
         "os.exec", "os.spawn", "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
         "ctypes.dlsym", "ctypes.dlsym/handle", "os.setuid", "os.chroot", "os.startfile"}
PATH_ARGS = {"os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.mkdir": (0,), "os.chmod": (0,),
             "os.chown": (0,), "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,), "os.utime": (0,),
             "shutil.rmtree": (0,), "shutil.move": (0, 1), "shutil.copyfile": (1,), "shutil.copytree": (1,),
             "os.setxattr": (0,), "os.removexattr": (0,), "os.mknod": (0,)}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_write, _exit, _realpath, _fspath = os.write, os._exit, os.path.realpath, os.fspath

def _inside(path):
    if isinstance(path, int):
        return True
    path = _fspath(path)
    if isinstance(path, bytes):
        path = path.decode(errors="replace")
    full = _realpath(path)
    return full + os.sep == root or full.startswith(root) or full == "/dev/null"

def _stop(event, detail):
    _write(2, ("\n%s %s %s\n" % (%(mark)r, event, detail))[:2000].encode(errors="replace"))
    _exit(%(code)d)

def _guard(event, args):
    if event in BLOCK:
        _stop(event, repr(args)[:200])
    elif event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE_FLAGS)
        if writes and not _inside(path):
            _stop(event, repr(path))
    elif event in PATH_ARGS:
        for i in PATH_ARGS[event]:
            if i < len(args) and args[i] is not None and not _inside(args[i]):
                _stop(event, repr(args[i]))

sys.path.insert(0, workdir)
sys.argv = [os.path.join(workdir, "main.py")]
sys.addaudithook(_guard)
del resource
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
""".replace("%(mark)r", repr(BLOCKED_MARK)).replace("%(code)d", str(BLOCKED_EXIT))


@dataclass
class SandboxResult:
    status: str  # one of STATUSES
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@lru_cache(maxsize=1)
def network_namespace_prefix() -> tuple[str, ...]:
    """`unshare -n` when this host lets us make a network namespace, else nothing (the guard still holds)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    try:
        probe = subprocess.run([unshare, "-n", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (unshare, "-n") if probe.returncode == 0 else ()


def _clean_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _tail(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - KEEP_OUTPUT_CHARS * 4))
        return handle.read().decode("utf-8", errors="replace")[-KEEP_OUTPUT_CHARS:]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _classify(returncode: int, stderr: str, wall_timeout: bool) -> str:
    if wall_timeout or returncode == -signal.SIGXCPU:
        return "timeout"
    if returncode == 0:
        return "passed"
    if returncode == BLOCKED_EXIT and BLOCKED_MARK in stderr:
        return "blocked"
    if returncode == -signal.SIGXFSZ or _FILE_TOO_LARGE in stderr:
        return "error"
    # SIGKILL that we did not send: the kernel's OOM killer.
    if "MemoryError" in stderr or returncode == -signal.SIGKILL:
        return "memory"
    return "failed"


def run_program(
    code: str,
    timeout_s: float = 10,
    memory_mb: int = 1024,
    stdin: str | None = None,
    files: dict[str, str] | None = None,
) -> SandboxResult:
    """Run Python source `code` as `__main__` in the sandbox.

    `stdin` is fed to the program; `files` (name -> text) are written into its temp dir first.
    Status: passed (exit 0), failed (non-zero exit), timeout (wall or CPU limit), memory (out of
    memory), blocked (the guard stopped a forbidden action), error (the sandbox could not run it, or
    it wrote more than the output limit).
    """
    start = time.monotonic()
    # <tmp>/work is the program's own dir; its captured output sits beside it, out of its reach.
    outer = Path(tempfile.mkdtemp(prefix="sandbox-"))
    try:
        root = outer / "work"
        root.mkdir()
        workdir = str(root)
        (root / "main.py").write_text(code, encoding="utf-8")
        for name, text in (files or {}).items():
            (root / name).write_text(text, encoding="utf-8")
        (outer / "stdin").write_text(stdin or "", encoding="utf-8")
        cpu_s = max(1, math.ceil(timeout_s)) + 1
        command = [
            *network_namespace_prefix(),
            sys.executable,
            "-I",
            "-c",
            _BOOTSTRAP,
            workdir,
            str(memory_mb << 20),
            str(cpu_s),
            str(OUTPUT_LIMIT_BYTES),
        ]
        wall_timeout = False
        with (
            open(outer / "stdin", "rb") as fin,
            open(outer / "stdout", "wb") as fout,
            open(outer / "stderr", "wb") as ferr,
        ):
            try:
                proc = subprocess.Popen(
                    command,
                    stdin=fin,
                    stdout=fout,
                    stderr=ferr,
                    cwd=workdir,
                    env=_clean_env(workdir),
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as err:
                return SandboxResult(
                    "error", None, "", f"sandbox could not start: {err}", time.monotonic() - start
                )
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                wall_timeout = True
                _kill_group(proc.pid)
                proc.wait()
            _kill_group(proc.pid)  # anything the program left behind in its group
        stdout, stderr = _tail(outer / "stdout"), _tail(outer / "stderr")
        status = _classify(proc.returncode, stderr, wall_timeout)
        if status == "timeout" and wall_timeout:
            stderr += f"\nsandbox: wall-clock limit of {timeout_s:g}s reached"
        elif status == "error":
            stderr += (
                f"\nsandbox: file-size limit of {OUTPUT_LIMIT_BYTES >> 20} MiB (output included) reached"
            )
        return SandboxResult(status, proc.returncode, stdout, stderr, time.monotonic() - start)
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def check_program(
    solution: str,
    tests: str,
    entry_point: str | None = None,
    timeout_s: float = 10,
    memory_mb: int = 1024,
) -> SandboxResult:
    """Run `solution` followed by `tests`; with `entry_point`, also call `check(<entry_point>)`
    (HumanEval's convention). Passed means every assert held and the program exited 0."""
    program = f"{solution}\n\n{tests}\n"
    if entry_point:
        program += f"\ncheck({entry_point})\n"
    return run_program(program, timeout_s=timeout_s, memory_mb=memory_mb)


def map_parallel[T, R](fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """`fn` over `items` from a thread pool (sandboxes are subprocesses, so threads suffice), in order.

    Default: two workers per core, since a sandbox spends part of its life starting up and waiting
    (benchmarks/eval_sandbox.py: 4 workers beat 2 on 2 cores)."""
    workers = workers or 2 * max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, items)
