"""The exit-code policy (megatron_infi/errors.py) in one place: config / input error 2, runtime
failure 1, clean stop 0, one line on stderr; a bug keeps its traceback. Under torchrun a config error
leaves one line from the ranks (exit 2 each) and torchrun itself fails (it maps any failed rank to 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from megatron_infi.errors import ConfigError, DataError, RunError, Stopped, command

REPO = Path(__file__).resolve().parents[1]


def _entry(error: Exception):
    @command("infi x")
    def main(argv=None):
        raise error

    return main


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (ConfigError("train.lr", "must be > 0"), 2, "infi x: config error: train.lr: must be > 0"),
        (DataError("a.jsonl:3: not JSON"), 2, "infi x: input error: a.jsonl:3: not JSON"),
        (RunError("stage score did not complete"), 1, "infi x: error: stage score did not complete"),
        (Stopped("preempted at step 3: rerun to resume"), 0, "infi x: stopped: preempted at step 3: rerun to resume"),
    ],
)  # fmt: skip
def test_each_kind_of_error_has_its_exit_code_and_one_line(error, code, line, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert _entry(error)() == code
    assert capsys.readouterr().err == line + "\n"


def test_multi_line_messages_are_folded_into_one(capsys):
    assert _entry(DataError("x.yaml: bad\n  line 2"))() == 2
    assert capsys.readouterr().err == "infi x: input error: x.yaml: bad   line 2\n"


def test_a_bug_is_not_an_expected_error():
    with pytest.raises(KeyError):
        _entry(KeyError("step"))()


def test_ranks_report_once_per_config_and_each_their_own_failure(capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert _entry(ConfigError("parallel.tensor", "3 does not divide 8"))() == 2
    assert capsys.readouterr().err == ""  # rank 0 says it; every rank read the same config
    assert _entry(DataError("shard 1 is truncated"))() == 2
    assert capsys.readouterr().err == "[rank 1] infi x: input error: shard 1 is truncated\n"


@pytest.mark.dist
def test_torchrun_config_error_is_one_line_and_torchrun_fails(tmp_path, boolq_corpus):
    """A layout the launched world cannot run: the ranks exit 2 before a process group exists (torchrun
    may stop the slower one first), rank 0 prints one line, no rank prints a traceback; torchrun
    prints its own failure summary and exits 1 (it maps any failed rank to 1)."""
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {"run_dir": str(tmp_path / "run"), "model": {"preset": "tiny"}, "parallel": {"tensor": 4},
             "data": {"tokenizer": str(boolq_corpus[0]), "blend": [{"prefix": str(boolq_corpus[1])}]}}
        )
    )  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [*cmd, "-m", "megatron_infi.train", "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    ours = [line for line in proc.stderr.splitlines() if "infi train:" in line]
    assert ours == [
        "[rank 0] infi train: config error: parallel: world size 2 is not a multiple of tensor x pipeline = 4"
    ]
    assert "megatron_infi/" not in proc.stderr  # no frame of ours: the children raised nothing
    assert "exitcode  : 2" in proc.stderr  # torchrun's summary names the rank that exited 2 first
