"""An exclusive lock on an output directory (a training `run_dir`, a data `output_dir`), so that two
runs never write into one directory.

The lock is an `flock` on `<dir>/.infi.lock`, held for as long as the owning process lives: a crash or
`kill -9` frees it without anyone cleaning up. The file also records who holds it (pid, host, start
time) for the "held by" error and for the warning when a run takes over a lock its dead predecessor
left behind. Where the filesystem refuses `flock` (some NFS mounts), the recorded pid is checked
instead: a live process on this host holds it, anything else is stale.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from megatron_infi.errors import RunError

log = logging.getLogger(__name__)

LOCK_NAME = ".infi.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started: str  # ISO time, UTC

    @staticmethod
    def me() -> LockHolder:
        return LockHolder(
            os.getpid(), socket.gethostname(), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        )

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.started}"

    def is_alive_here(self) -> bool:
        """True when this host runs a process with the recorded pid (pid reuse errs on the safe side)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class LockHeldError(RunError):
    """`<what> <dir> is held by pid P on host H since T`: another run owns the directory."""

    def __init__(self, what: str, directory: Path, holder: LockHolder | None):
        self.directory = directory
        self.holder = holder
        who = holder.describe() if holder else "another process (no holder recorded)"
        super().__init__(f"{what} {directory} is held by {who}; stop that run first or choose another {what}")


def read_holder(directory: str | Path) -> LockHolder | None:
    """Who the lock file of `directory` names (None: no lock file, or released)."""
    try:
        return _parse((Path(directory) / LOCK_NAME).read_text())
    except FileNotFoundError:
        return None


def _read(fd: int) -> LockHolder | None:
    return _parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))


def _parse(text: str) -> LockHolder | None:
    try:
        return LockHolder(**json.loads(text))
    except (ValueError, TypeError):  # empty (released) or unreadable: nobody is recorded
        return None


class DirLock:
    """`with DirLock(run_dir, "run_dir"):` ... or `acquire()` / `release()`. Not re-entrant: a second
    DirLock on the same dir fails even in the same process."""

    def __init__(self, directory: str | Path, what: str = "directory"):
        self.directory = Path(directory)
        self.what = what
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already acquired by this DirLock")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                previous = _read(fd)
            except BlockingIOError:
                raise LockHeldError(self.what, self.directory, _read(fd)) from None
            except OSError as err:
                if err.errno not in _NO_FLOCK:
                    raise
                log.warning(f"{self.path}: the filesystem does not support flock; checking the recorded pid")
                previous = _read(fd)
                if previous is not None and previous.pid != os.getpid() and previous.is_alive_here():
                    raise LockHeldError(self.what, self.directory, previous) from None
            if previous is not None:
                state = (
                    "that process is gone" if previous.host == socket.gethostname() else "its lock was free"
                )
                log.warning(
                    f"{self.what} {self.directory}: taking over the stale lock of {previous.describe()} ({state})"
                )
            record = json.dumps(asdict(LockHolder.me())).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the record, then drop the lock. The file stays: removing it would let a process that
        opened it just before hold a lock on a deleted file while a third creates a new one."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
