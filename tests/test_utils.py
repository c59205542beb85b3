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
