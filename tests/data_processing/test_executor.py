"""One `executor:` section and one factory for every datatrove stage (data_processing/executor.py)."""

from __future__ import annotations

import typing

import pytest

from megatron_infi.config.core import ConfigError, load_config
from megatron_infi.data_processing.executor import ExecutorConfig, make_executor
from megatron_infi.data_processing.pipelines.config import PretrainDataConfig
from megatron_infi.data_processing.sft.config import SelectConfig, SynthesizeConfig


@pytest.mark.parametrize("stage", [PretrainDataConfig, SelectConfig, SynthesizeConfig])
def test_every_datatrove_stage_reads_the_same_executor_section(stage):
    assert typing.get_type_hints(stage)["executor"] is ExecutorConfig


def test_slurm_needs_a_partition():
    with pytest.raises(ConfigError) as info:  # partition names are per cluster: none is guessed
        load_config(ExecutorConfig, None, ["kind=slurm"])
    assert info.value.field == "slurm.partition"


def test_the_factory_builds_local_and_slurm_executors(tmp_path):
    from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor

    local = make_executor(ExecutorConfig(tasks=4, workers=2), [], 3, tmp_path / "a", "prepare")
    assert isinstance(local, LocalPipelineExecutor) and (local.world_size, local.workers) == (3, 2)
    ex = load_config(ExecutorConfig, None, ["kind=slurm", "slurm.partition=cpu", "slurm.gpus_per_task=1"])
    first = make_executor(ex, [], 8, tmp_path / "b", "prepare")
    second = make_executor(ex, [], 1, tmp_path / "c", "select", depends=first)
    assert isinstance(second, SlurmPipelineExecutor) and second.depends is first
    args = first.get_sbatch_args(max_array=8)
    assert (args["partition"], args["job-name"], args["gpus"]) == ("cpu", "infi-data-prepare", 1)
    assert "qos" not in args  # null: the cluster's default QOS
