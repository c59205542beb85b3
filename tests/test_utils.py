import json
import os
import stat

import pytest

from megatron_infi.utils import SkipCounter, atomic_dir, atomic_write_json, read_jsonl


def test_atomic_write_has_normal_permissions_and_replaces(tmp_path):
    path = tmp_path / "out.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_read_jsonl_skips_and_counts(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\nnot json\n\xff\xfe\n[1, 2]\n\n{"a": 2}\n')
    skipped = SkipCounter()
    assert [r["a"] for r in read_jsonl(path, skipped)] == [1, 2]
    assert skipped.counts == {"malformed-json": 1, "non-utf8": 1, "not-an-object": 1}
    assert skipped.examples["malformed-json"] == [f"{path}:2"]


def test_dir_lock_refuses_a_live_holder_and_takes_over_from_a_dead_one(tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    from megatron_infi.utils import DirLock, DirLockedError

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from megatron_infi.utils import DirLock\n"
            f"with DirLock({str(tmp_path)!r}):\n    print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DirLockedError) as err, DirLock(tmp_path, what="data output_dir"):
            pass
        message = str(err.value)
        assert message.startswith(f"data output_dir {tmp_path} is in use: held by pid {holder.pid} ")
        assert f"on {socket.gethostname()} since " in message and "-c" in message
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays behind
        holder.wait()
    assert (tmp_path / DirLock.FILE).is_file()
    with DirLock(tmp_path) as lock:
        assert lock.stale_holder.startswith(f"pid {holder.pid} ")
        with pytest.raises(DirLockedError, match=f"held by pid {os.getpid()} "), DirLock(tmp_path):
            pass  # also a second holder within one process
    assert not (tmp_path / DirLock.FILE).exists()
    with DirLock(tmp_path) as lock:
        assert lock.stale_holder is None  # released cleanly last time
