"""A sandbox for model-written Python: run it, against tests, and say how it ended.

The isolation is the operating system's, not Python's: every program runs under bubblewrap
(`bwrap`), the unprivileged sandbox flatpak uses. We chose it over driving `unshare` ourselves
because it builds the whole view in one exec without root (user namespace), kills the sandbox when
its parent dies, and loads a seccomp filter, where `unshare` alone gives namespaces but no way to
assemble a read-only root without a privileged helper. Each program gets:
- a view of only what the interpreter needs, read-only: /usr (the C library, the system Python),
  the Python install it runs on (sys.base_prefix, stdlib only: no venv, no site-packages of ours)
  and /etc/ld.so.cache; no home, no repo, no /proc, no /sys, a minimal /dev;
- a private tmpfs work dir /work (its cwd, HOME and TMPDIR; /tmp points there), 64 MiB, gone after;
- fresh user, pid, network (loopback only), ipc, uts and cgroup namespaces: it sees no other
  process and no network, and it runs as pid 1, so the kernel removes everything with it;
- a seccomp filter (seccomp.py): no new process at all (fork, vfork, non-thread clone), no socket
  but AF_UNIX, no namespaces, mounts, ptrace, bpf, io_uring, keyrings. Such a call kills the
  program: status `blocked`. Everything else it may try fails with an ordinary OSError (read-only
  file system, no such file), which it may catch; uncaught, that is `failed`;
- rlimits (prlimit inside the sandbox): address space (`memory_mb`), file size (16 MiB, output
  included), open files, no core dumps, and CPU time.
The verdict's time limit is CPU time, measured from the kernel's accounting of the program
(`wait4`), so a correct program is not lost when the machine is loaded: `timeout_s` is CPU
seconds (RLIMIT_CPU kills at timeout_s + 1, rounded up); only a generous wall-clock cap
(WALL_FACTOR * timeout_s + WALL_SLACK_S) stops programs that wait instead of computing.

Without a working bwrap, run_program refuses (SandboxUnavailableError, one line naming what to
install) unless the caller opts in with `unsafe_no_sandbox=True`: then the program runs as a plain
subprocess with the same limits and a loud warning, with access to everything its user can reach.
Many programs run in parallel from threads: nothing here uses `preexec_fn` (unsafe with threads).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
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

from megatron_infi.errors import RunError
from megatron_infi.scoring.seccomp import seccomp_filter

STATUSES = ("passed", "failed", "timeout", "memory", "blocked", "error")
OUTPUT_LIMIT_BYTES = 16 << 20
KEEP_OUTPUT_CHARS = 8192
WORK_DIR = "/work"
WORK_DIR_BYTES = 64 << 20
OPEN_FILES = 256
WALL_FACTOR = 10
WALL_SLACK_S = 5.0
INSTALL_HINT = "install bubblewrap (apt-get install bubblewrap)"
# Python ignores SIGXFSZ, so hitting RLIMIT_FSIZE surfaces as this error instead of the signal.
_FILE_TOO_LARGE = "[Errno 27] File too large"
# bwrap reports its own set-up failures on stderr with this prefix and exits 1.
_BWRAP_ERROR = "bwrap: "

log = logging.getLogger(__name__)


class SandboxUnavailableError(RunError):
    """No isolation on this host and the caller did not opt into running code without it."""


@dataclass
class SandboxResult:
    status: str  # one of STATUSES
    returncode: int | None  # negative: killed by that signal
    stdout: str
    stderr: str
    seconds: float  # wall clock, sandbox start included
    cpu_seconds: float = 0.0  # what the verdict's time limit counts

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def wall_cap_s(timeout_s: float) -> float:
    """The wall-clock backstop for a CPU limit of `timeout_s` seconds."""
    return WALL_FACTOR * timeout_s + WALL_SLACK_S


@lru_cache(maxsize=1)
def _interpreter() -> tuple[str, str]:
    """(the interpreter binary, its install prefix), outside any venv: the venv's binary may be a
    copy that only works next to its pyvenv.cfg, which the sandbox does not show."""
    binary = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(binary), os.path.realpath(sys.base_prefix)


@lru_cache(maxsize=1)
def _root_view() -> tuple[str, ...]:
    """bwrap arguments for the read-only view: /usr, the top-level links into it (or the dirs
    themselves on systems without merged /usr), the loader cache, the Python install."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    prefix = _interpreter()[1]
    if os.path.commonpath([prefix, "/usr"]) != "/usr":
        args += ["--ro-bind", prefix, prefix]
    return tuple(args)


def _bwrap_command(bwrap: str, seccomp_fd: int, info_fd: int, file_fds: dict[str, int]) -> list[str]:
    files = [arg for name, fd in file_fds.items() for arg in ("--file", str(fd), f"{WORK_DIR}/{name}")]
    return [
        bwrap,
        "--info-fd",  # where bwrap writes the program's pid
        str(info_fd),
        "--unshare-all",
        "--unshare-user",  # also as root, where --unshare-all keeps the host's user namespace
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",  # its own accounting reaches us through wait4; no init between
        "--hostname",
        "sandbox",
        *_root_view(),
        "--dev",
        "/dev",
        "--size",
        str(WORK_DIR_BYTES),
        "--tmpfs",
        WORK_DIR,
        "--symlink",
        WORK_DIR,
        "/tmp",
        *files,
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--chdir",
        WORK_DIR,
        "--seccomp",
        str(seccomp_fd),
        "--",
    ]


def _python_command(cpu_limit_s: int, memory_mb: int, *args: str) -> list[str]:
    """The interpreter under its rlimits (set by prlimit, which then execs it)."""
    limits = [
        f"--cpu={cpu_limit_s}:{cpu_limit_s}",  # soft = hard: SIGKILL, which even pid 1 gets
        f"--fsize={OUTPUT_LIMIT_BYTES}",
        f"--nofile={OPEN_FILES}",
        "--core=0",
    ]
    if memory_mb > 0:
        limits.append(f"--as={memory_mb << 20}")
    # -E: no PYTHON* variables; unlike -I it keeps the work dir importable
    return ["prlimit", *limits, "--", _interpreter()[0], "-E", "-s", "-B", *args]


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


def _memfd(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name)  # close-on-exec: only what pass_fds names reaches a child
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _probe(bwrap: str | None) -> str | None:
    """Why the sandbox cannot run here (None: it can), by running an empty program in it."""
    if bwrap is None:
        return f"code sandbox unavailable: bubblewrap (bwrap) is not on PATH; {INSTALL_HINT}"
    try:
        seccomp = seccomp_filter()
    except KeyError:
        return f"code sandbox unavailable: no seccomp table for {os.uname().machine} (x86_64, aarch64)"
    fd, info_fd = _memfd("seccomp", seccomp), _memfd("info")
    try:
        probe = subprocess.run(
            [*_bwrap_command(bwrap, fd, info_fd, {}), *_python_command(10, 0, "-c", "")],
            pass_fds=(fd, info_fd),
            capture_output=True,
            text=True,
            timeout=120,
            env=_clean_env(WORK_DIR),
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"code sandbox unavailable: {bwrap} did not run ({err}); {INSTALL_HINT}"
    finally:
        os.close(fd)
        os.close(info_fd)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        return f"code sandbox unavailable: an empty program failed under {bwrap}: {why}"
    return None


@lru_cache(maxsize=1)
def sandbox_unavailable_reason() -> str | None:
    """One line saying why programs cannot be isolated on this host, or None when they can."""
    return _probe(shutil.which("bwrap"))


@lru_cache(maxsize=1)
def _warn_unsafe() -> None:
    log.warning(
        "UNSAFE: unsafe_no_sandbox is set: model-written code runs WITHOUT isolation, as uid %d, "
        "able to read and change your files, start processes and use the network",
        os.getuid(),
    )


def _tail(fd: int) -> str:
    size = os.fstat(fd).st_size
    start = max(0, size - KEEP_OUTPUT_CHARS * 4)
    return os.pread(fd, size - start, start).decode("utf-8", errors="replace")[-KEEP_OUTPUT_CHARS:]


def _kill_program(pid: int, info_fd: int | None) -> None:
    """SIGKILL the program: under bwrap the child it names on --info-fd, so that bwrap reaps it
    (and accounts its CPU time) before exiting; unsandboxed its whole session."""
    with contextlib.suppress(ProcessLookupError, ValueError, KeyError):
        if info_fd is None:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(json.loads(os.pread(info_fd, 4096, 0))["child-pid"], signal.SIGKILL)


def _wait(proc: subprocess.Popen, wall_s: float, info_fd: int | None) -> tuple[int, float, bool]:
    """(exit status as subprocess reports it, CPU seconds of the program, whether the wall cap hit).
    wait4 gives the CPU time the kernel accounted to the child and what it reaped."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        wall_hit = not poller.poll(wall_s * 1000)
        if wall_hit:
            _kill_program(proc.pid, info_fd)
            if not poller.poll(10_000):  # bwrap did not follow: --die-with-parent ends the sandbox
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        os.close(pidfd)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, wall_hit


def _classify(
    returncode: int, stderr: str, cpu_s: float, timeout_s: float, wall_s: float, wall_hit: bool
) -> tuple[str, str]:
    """(status, the sandbox's note for stderr)."""
    if wall_hit:
        return "timeout", f"wall-clock cap of {wall_s:g}s reached"
    if cpu_s > timeout_s:
        return "timeout", f"CPU-time limit of {timeout_s:g}s exceeded ({cpu_s:.2f}s used)"
    if returncode == 0:
        return "passed", ""
    if returncode == -signal.SIGSYS:
        return "blocked", "killed for a forbidden system call (a new process, a network socket, ptrace, ...)"
    if returncode == 1 and stderr.startswith(_BWRAP_ERROR):
        return "error", "bwrap could not set the sandbox up"
    if returncode == -signal.SIGXFSZ or _FILE_TOO_LARGE in stderr:
        return "error", f"file-size limit of {OUTPUT_LIMIT_BYTES >> 20} MiB (output included) reached"
    # SIGKILL short of the CPU limit: the kernel's OOM killer.
    if "MemoryError" in stderr or returncode == -signal.SIGKILL:
        return "memory", ""
    return "failed", ""


def _check_names(files: dict[str, str]) -> None:
    for name in files:
        if not name or "/" in name or name in (".", "..", "main.py"):
            raise ValueError(f"sandbox file name {name!r}: give a plain file name other than main.py")


def run_program(
    code: str,
    timeout_s: float = 10,
    memory_mb: int = 1024,
    stdin: str | None = None,
    files: dict[str, str] | None = None,
    unsafe_no_sandbox: bool = False,
) -> SandboxResult:
    """Run Python source `code` as `__main__` (main.py in its work dir) in the sandbox.

    `timeout_s`: CPU seconds; `stdin` is fed to the program; `files` (name -> text) are put in
    its work dir first. Status: passed (exit 0), failed (non-zero exit), timeout (more than
    `timeout_s` CPU seconds, or the wall-clock cap), memory (out of memory), blocked (killed for a
    forbidden system call), error (the sandbox could not run it, or the output limit was hit).
    Raises SandboxUnavailableError when there is no isolation and `unsafe_no_sandbox` is off.
    """
    files = files or {}
    _check_names(files)
    inputs = {"main.py": code, **files}
    start = time.monotonic()
    with contextlib.ExitStack() as stack:

        def memfd(name: str, data: bytes = b"") -> int:
            fd = _memfd(name, data)
            stack.callback(os.close, fd)
            return fd

        stdin_fd, stdout_fd, stderr_fd = memfd("stdin", (stdin or "").encode()), memfd("out"), memfd("err")
        if unsafe_no_sandbox:
            _warn_unsafe()
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="sandbox-"))
            for name, text in inputs.items():
                with open(os.path.join(workdir, name), "w", encoding="utf-8") as handle:
                    handle.write(text)
            prefix, pass_fds, info_fd = [], (), None
        else:
            reason = sandbox_unavailable_reason()
            if reason:
                raise SandboxUnavailableError(f"{reason}, or set unsafe_no_sandbox to run code unisolated")
            workdir = WORK_DIR
            file_fds = {name: memfd(name, text.encode()) for name, text in inputs.items()}
            seccomp_fd, info_fd = memfd("seccomp", seccomp_filter()), memfd("info")
            prefix = _bwrap_command(shutil.which("bwrap") or "bwrap", seccomp_fd, info_fd, file_fds)
            pass_fds = (seccomp_fd, info_fd, *file_fds.values())
        command = [*prefix, *_python_command(math.ceil(timeout_s) + 1, memory_mb, "main.py")]
        try:
            proc = subprocess.Popen(
                command,
                stdin=stdin_fd,
                stdout=stdout_fd,
                stderr=stderr_fd,
                pass_fds=pass_fds,
                cwd=None if prefix else workdir,
                env=_clean_env(workdir),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as err:
            return SandboxResult(
                "error", None, "", f"sandbox could not start: {err}", time.monotonic() - start
            )
        wall_s = wall_cap_s(timeout_s)
        returncode, cpu_s, wall_hit = _wait(proc, wall_s, info_fd)
        with contextlib.suppress(ProcessLookupError):  # unsandboxed: whatever it left in its session
            os.killpg(proc.pid, signal.SIGKILL)
        if prefix and returncode > 128:  # bwrap exits 128 + n for a program killed by signal n
            returncode = 128 - returncode
        stdout, stderr = _tail(stdout_fd), _tail(stderr_fd)
    status, note = _classify(returncode, stderr, cpu_s, timeout_s, wall_s, wall_hit)
    if note:
        stderr += f"\nsandbox: {note}"
    return SandboxResult(status, returncode, stdout, stderr, time.monotonic() - start, cpu_s)


def check_program(
    solution: str,
    tests: str,
    entry_point: str | None = None,
    timeout_s: float = 10,
    memory_mb: int = 1024,
    unsafe_no_sandbox: bool = False,
) -> SandboxResult:
    """Run `solution` followed by `tests`; with `entry_point`, also call `check(<entry_point>)`
    (HumanEval's convention). Passed means every assert held and the program exited 0."""
    program = f"{solution}\n\n{tests}\n"
    if entry_point:
        program += f"\ncheck({entry_point})\n"
    return run_program(program, timeout_s=timeout_s, memory_mb=memory_mb, unsafe_no_sandbox=unsafe_no_sandbox)


def map_parallel[T, R](fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """`fn` over `items` from a thread pool (sandboxes are subprocesses, so threads suffice), in order.

    Default: two workers per core, since a sandbox spends part of its life starting up and waiting
    (benchmarks/eval_sandbox.py: 4 workers beat 2 on 2 cores)."""
    workers = workers or 2 * max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, items)


if __name__ == "__main__":  # `python -m megatron_infi.scoring.code`: can this host isolate programs?
    problem = sandbox_unavailable_reason()
    print(problem or "code sandbox: ok (bubblewrap with user, pid and network namespaces, seccomp)")
    sys.exit(1 if problem else 0)
