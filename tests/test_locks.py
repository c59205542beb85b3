"""The directory lock: one holder at a time, a clear "held by" error, a dead holder frees it, and a
record left by a dead process is taken over with a warning."""

from __future__ import annotations

import errno
import json
import logging
import socket
import subprocess
import sys
import textwrap

import pytest

from megatron_infi import locks
from megatron_infi.locks import LOCK_NAME, DirLock, LockHeldError, read_holder

HOLD = textwrap.dedent(
    """
    import sys, time
    from megatron_infi.locks import DirLock
    lock = DirLock(sys.argv[1], "run_dir").acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


def _holder_process(directory):
    """A separate process holding the lock on `directory` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_with_pid_host_and_time(tmp_path):
    proc = _holder_process(tmp_path)
    try:
        with pytest.raises(LockHeldError) as info:
            DirLock(tmp_path, "run_dir").acquire()
        message = str(info.value)
        assert message.startswith(
            f"run_dir {tmp_path} is held by pid {proc.pid} on host {socket.gethostname()}"
        )
        assert "since 20" in message
        assert read_holder(tmp_path).pid == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_frees_the_lock_and_its_record_is_taken_over(tmp_path, caplog):
    proc = _holder_process(tmp_path)
    proc.kill()  # no cleanup runs: the record stays, the flock goes with the process
    proc.wait()
    assert read_holder(tmp_path).pid == proc.pid
    with caplog.at_level(logging.WARNING, logger=locks.__name__), DirLock(tmp_path, "run_dir") as lock:
        assert lock.held and read_holder(tmp_path).pid != proc.pid
    assert f"taking over the stale lock of pid {proc.pid}" in caplog.text
    assert "that process is gone" in caplog.text
    assert read_holder(tmp_path) is None  # released: the record is cleared, the file stays
    assert (tmp_path / LOCK_NAME).exists()


def test_lock_is_exclusive_within_one_process_and_reusable_after_release(tmp_path):
    first = DirLock(tmp_path / "new" / "dir", "output_dir").acquire()
    with pytest.raises(LockHeldError, match="output_dir .* is held by pid"):
        DirLock(tmp_path / "new" / "dir", "output_dir").acquire()
    first.release()
    with DirLock(tmp_path / "new" / "dir", "output_dir"):
        pass


def test_without_flock_a_live_recorded_pid_still_holds(tmp_path, monkeypatch):
    """Filesystems that refuse flock (some NFS mounts): the recorded pid decides."""
    proc = _holder_process(tmp_path)
    try:

        def no_flock(fd, op):
            raise OSError(errno.ENOLCK, "No locks available")

        monkeypatch.setattr(locks.fcntl, "flock", no_flock)
        with pytest.raises(LockHeldError, match=f"pid {proc.pid}"):
            DirLock(tmp_path, "run_dir").acquire()
    finally:
        proc.kill()
        proc.wait()
    # Dead now: its record is stale and the lock can be taken.
    with DirLock(tmp_path, "run_dir"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] != proc.pid
