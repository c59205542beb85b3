"""The pretrain sbatch on a real one-node SLURM (slurmctld + slurmd + munge on localhost): the tiny
demo model trains under srun -> run.sh -> torchrun (TP=2 on gloo); SLURM's preemption signal makes it
checkpoint, the job requeues itself, and the second run resumes and finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launch import local_slurm
from tests.launch.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.dist]
TRAIN_ITERS = 16


@pytest.fixture
def cluster(tmp_path_factory):
    reason = local_slurm.missing()
    if reason:
        pytest.skip(reason)
    slurm = local_slurm.LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        slurm.start()
    except (RuntimeError, subprocess.CalledProcessError) as err:
        slurm.stop()
        detail = getattr(err, "stderr", "") or str(err)
        pytest.skip(f"slurmctld/slurmd/munged could not start here: {detail.strip()[:300]}")
    yield slurm
    slurm.stop()


def _wait(predicate, timeout: float, what: str, slurm, job_id: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; job: {slurm.job(job_id)}")


def test_pretrain_sbatch_preempt_requeue_resume(cluster, boolq_corpus, tmp_path):
    tokenizer_dir, prefix = boolq_corpus
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    env = {
        **cluster.env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "VENV": str(tmp_path / "no-venv"),  # the interpreter on PATH
        "NPROC_PER_NODE": "2",  # TP=2 on two CPU processes
        "LOG_DIR": str(logs),
        "WANDB_MODE": "offline",
    }
    overrides = [
        f"run_dir={run_dir}",
        f"data.tokenizer={tokenizer_dir}",
        f"data.blend=[{{prefix: {prefix}, weight: 1.0}}]",
        "data.seq_length=64",
        f"train.train_iters={TRAIN_ITERS}",
        "train.global_batch_size=4",
        "train.micro_batch_size=2",
        "train.eval_interval=0",
        "checkpoint.save_interval=0",
        "logging.tensorboard=false",
        "logging.log_interval=10",
    ]
    submit = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--nodes=1",
            "--gpus-per-node=0",
            f"--cpus-per-task={os.cpu_count()}",
            "--mem=0",
            f"--output={logs}/%x-%j.out",
            "launch/slurm/pretrain.sbatch",
            "launch/configs/demo/pretrain.yaml",
            *overrides,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submit.returncode == 0, submit.stderr
    job_id = submit.stdout.strip().split(";")[0]
    metrics = run_dir / "logs" / "train_metrics.jsonl"

    def steps_done() -> int:
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    _wait(lambda: steps_done() >= 2, 180, "the first training steps", cluster, job_id)
    # What `#SBATCH --signal=B:USR1@180` does near the time limit, now.
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], env=env, check=True, timeout=30)
    _wait(lambda: cluster.job(job_id).get("Restarts") == "1", 120, "the requeue", cluster, job_id)
    _wait(lambda: cluster.job(job_id).get("JobState") == "PENDING", 60, "the requeued job", cluster, job_id)
    # slurmd refuses a credential issued in the same second as the old run's revocation ("Job
    # credential revoked"), so let a second pass before starting it again.
    time.sleep(2)
    # SLURM holds a requeued job ~2 minutes before it is eligible again; make it eligible now.
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, timeout=30)
    _wait(
        lambda: cluster.job(job_id).get("JobState") == "COMPLETED",
        180,
        "the requeued run to finish",
        cluster,
        job_id,
    )

    job = cluster.job(job_id)
    out = (logs / f"infi-pretrain-{job_id}.out").read_text()
    assert job["Restarts"] == "1", out
    assert job["ExitCode"] == "0:0", out
    assert f"requeued job {job_id}" in out
    assert "stop requested (signal or launcher gone): checkpointing at iteration" in out
    stopped_at = int(out.split("checkpointing at iteration ")[1].split()[0])
    assert 2 <= stopped_at < TRAIN_ITERS
    assert f"at iteration {stopped_at}" in out.split("resumed from")[1].splitlines()[0]
    latest = (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip()
    assert int(latest) == TRAIN_ITERS
    # Every iteration trained exactly once across the two runs.
    iterations = [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()]
    iterations = [i for i in iterations if i is not None]
    assert sorted(iterations) == list(range(1, TRAIN_ITERS + 1)), iterations
