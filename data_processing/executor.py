"""The `executor:` section of every datatrove stage (`infi data pretrain`, `sft-select`,
`sft-synthesize`) and the one factory that turns it into datatrove's local or SLURM executor.

Defaults are chosen once for all stages:
- `tasks: 1`, `workers: -1`: one shard in one process runs anywhere and needs no tuning; raise
  `tasks` to shard the input (every task is one process locally, one array job on SLURM).
- `slurm.partition` has no default: partition names are per cluster, and a guess would fail only
  at submission, after the run dir is set up; an empty one fails at config time, naming the field.
- `slurm.qos: null`: the cluster's default QOS (datatrove's "normal" does not exist everywhere).
- `slurm.cpus_per_task: 1`, `mem_per_cpu_gb: 4`: a datatrove task is one single-threaded Python
  process; 4 GB covers the embedding and MinHash steps. Multi-threaded or GPU stages raise them in
  their config (launch/configs/sft_data/infialign_select.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from megatron_infi.errors import ConfigError


@dataclass
class SlurmConfig:
    partition: str = ""  # required with kind: slurm
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 4
    gpus_per_task: int = 0
    qos: str | None = None
    job_name: str = "infi-data"  # each stage's array is named <job_name>-<stage>
    env_command: str | None = None
    venv_path: str | None = None
    sbatch_args: dict[str, Any] = field(default_factory=dict)
    max_array_size: int = 1001


@dataclass
class ExecutorConfig:
    """datatrove executor for the sharded stages: `tasks` shards, `workers` of them at once."""

    kind: Literal["local", "slurm"] = "local"
    tasks: int = 1
    workers: int = -1  # local: tasks run at once (-1: all); slurm: array throttle (-1: no limit)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def validate(self) -> None:
        if self.tasks < 1:
            raise ConfigError("tasks", f"must be >= 1, got {self.tasks}")
        if self.workers == 0 or self.workers < -1:
            raise ConfigError("workers", f"must be -1 or >= 1, got {self.workers}")
        if self.kind == "slurm" and not self.slurm.partition:
            raise ConfigError("slurm.partition", "is required with kind: slurm")


def make_executor(
    ex: ExecutorConfig,
    pipeline: list,
    tasks: int,
    logging_dir: str | Path,
    stage: str,
    depends=None,
    slurm_logs_folder: str | Path | None = None,
):
    """One stage's datatrove executor. Local: up to `workers` of its `tasks` at once. SLURM: a job
    array named `<job_name>-<stage>` that starts after `depends` (the previous stage's executor)."""
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        workers = tasks if ex.workers == -1 else min(ex.workers, tasks)
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir))
    from datatrove.executor import SlurmPipelineExecutor

    s = ex.slurm
    return SlurmPipelineExecutor(
        pipeline,
        tasks=tasks,
        time=s.time,
        partition=s.partition,
        cpus_per_task=s.cpus_per_task,
        mem_per_cpu_gb=s.mem_per_cpu_gb,
        gpus_per_task=s.gpus_per_task,
        workers=ex.workers,
        job_name=f"{s.job_name}-{stage}",
        qos=s.qos or "",
        env_command=s.env_command,
        venv_path=s.venv_path,
        sbatch_args=dict(s.sbatch_args),
        max_array_size=s.max_array_size,
        logging_dir=str(logging_dir),
        depends=depends,
        slurm_logs_folder=str(slurm_logs_folder) if slurm_logs_folder else None,
    )
