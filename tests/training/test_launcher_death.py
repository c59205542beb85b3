"""A bare `torchrun` that dies of a signal it does not forward (SIGUSR1 kills it at once; SIGKILL) used
to leave its ranks training as orphans that never checkpointed. The ranks watch their launcher: they
agree to stop, checkpoint the iteration they reached and exit."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import psutil
import pytest

from megatron_infi.training import checkpoint as ckpt
from tests.training.launch import REPO, base_config, train_command

pytestmark = [pytest.mark.dist]
TRAIN_ITERS = 2000  # far more than the test lets it run


def _iterations(run_dir) -> list[int]:
    path = run_dir / "logs" / "train_metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines() if '"loss"' in line]


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGKILL], ids=["usr1", "kill"])
def test_ranks_checkpoint_and_exit_when_torchrun_dies(tmp_path, boolq_corpus, sig):
    tokenizer, prefix = boolq_corpus
    run = tmp_path / "run"
    cfg = base_config(run, tokenizer, prefix, train={"train_iters": TRAIN_ITERS}, parallel={"tensor": 2})
    cmd, env = train_command(cfg, nproc=2)
    with open(tmp_path / "torchrun.log", "w") as log:
        torchrun = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    ranks: list[psutil.Process] = []
    try:
        # Hang guards only (generous): the assertions below decide pass or fail.
        deadline = time.monotonic() + 400
        while len(_iterations(run)) < 2:
            assert torchrun.poll() is None, (tmp_path / "torchrun.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.5)
        ranks = psutil.Process(torchrun.pid).children()
        assert len(ranks) == 2
        torchrun.send_signal(sig)
        torchrun.wait(timeout=60)
        _, alive = psutil.wait_procs(ranks, timeout=300)
        assert not alive, f"ranks still running after their launcher died: {alive}"
    finally:
        for proc in [*ranks, psutil.Process(torchrun.pid)] if torchrun.poll() is None else ranks:
            if proc.is_running():
                proc.kill()
    stopped_at = max(_iterations(run))
    assert stopped_at < TRAIN_ITERS
    root = run / "checkpoints"
    assert ckpt.latest_iteration(root) == stopped_at, (tmp_path / "torchrun.log").read_text()[-3000:]
    assert ckpt.read_run_info(root / ckpt.iter_dirname(stopped_at))["train_state"]["iteration"] == stopped_at
    ckpt.verify_checkpoint_files(root / ckpt.iter_dirname(stopped_at))
