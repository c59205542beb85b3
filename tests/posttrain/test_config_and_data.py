"""Configs are validated up front with errors that name the field; bad data records are skipped and
counted with file:line; the shipped presets load."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from megatron_infi import cli
from megatron_infi.config.core import ConfigError, load_config
from megatron_infi.posttrain import common
from megatron_infi.posttrain.data import DataError, read_preference_records, read_sft_records, split_held_out
from megatron_infi.posttrain.dpo import DPOStageConfig
from megatron_infi.posttrain.sft import SFTStageConfig
from megatron_infi.utils import SkipCounter

CONFIGS = Path(__file__).resolve().parents[2] / "launch" / "configs" / "posttrain"


@pytest.mark.parametrize("name", ["infir_sft", "infialign_sft", "demo_sft"])
def test_sft_presets_load(name):
    cfg = load_config(SFTStageConfig, CONFIGS / f"{name}.yaml")
    assert cfg.assistant_only_loss and cfg.packing


def test_paper_presets_carry_the_papers_numbers():
    infir = load_config(SFTStageConfig, CONFIGS / "infir_sft.yaml").phases
    assert len(infir) == 1
    assert (infir[0].schedule.epochs, infir[0].schedule.global_batch_size) == (4, 128)
    assert (infir[0].optim.lr, infir[0].optim.scheduler, infir[0].optim.warmup_ratio) == (2e-5, "cosine", 0.1)
    infialign = load_config(SFTStageConfig, CONFIGS / "infialign_sft.yaml")
    assert [p.name for p in infialign.phases] == ["foundational", "advanced"]
    for phase in infialign.phases:
        assert (phase.schedule.epochs, phase.schedule.global_batch_size, phase.optim.lr) == (5, 64, 2e-5)
        assert (phase.optim.warmup_ratio, phase.optim.adam_beta1, phase.optim.adam_beta2) == (0.05, 0.9, 0.95)
        assert phase.optim.weight_decay == 0.0
    assert infialign.max_length == 32768


@pytest.mark.parametrize("name", ["infialign_dpo", "demo_dpo"])
def test_dpo_presets_load(name):
    cfg = load_config(DPOStageConfig, CONFIGS / f"{name}.yaml")
    assert cfg.loss_type == ["sigmoid"] and cfg.beta == 0.1


@pytest.mark.parametrize("name", ["infialign_dpo_pairs", "demo_dpo_pairs"])
def test_dpo_pairs_presets_load(name, tiny_model_dir):
    from megatron_infi.posttrain.dpo_pairs import DPOPairsConfig

    # The generation config checks that its model dir exists, so point it at a real one.
    cfg = load_config(DPOPairsConfig, CONFIGS / f"{name}.yaml", [f"generation.model={tiny_model_dir}"])
    assert cfg.sampling.n >= 2 and cfg.sampling.temperature > 0


def test_dry_run_prints_the_resolved_config(capsys):
    assert cli.main(["sft", "--config", str(CONFIGS / "demo_sft.yaml"), "--dry-run", "max_length=128"]) == 0
    out = capsys.readouterr().out
    assert "max_length: 128" in out and "name: foundational" in out


@pytest.mark.parametrize(
    ("command", "override", "field"),
    [
        ("sft", "phases=[{name: a, data: [x.jsonl], schedule: {global_batch_size: 3, micro_batch_size: 2}}]",
         "phases[0].schedule.global_batch_size"),
        ("sft", "phases=[{name: a, data: [x.jsonl], optim: {warmup_ratio: 1.5}}]", "phases[0].optim.warmup_ratio"),
        ("sft", "phases=[{name: a/b, data: [x.jsonl]}]", "phases[0].name"),
        ("sft", "logging.log_interval=0", "logging.log_interval"),
        ("sft", "checkpoint.keep_last=0", "checkpoint.keep_last"),
        ("sft", "packing_strategy=zigzag", "packing_strategy"),
        ("dpo", "loss_type=[sigmoid, nonsense]", "loss_type"),
        ("dpo", "beta=0", "beta"),
        ("dpo", "schedule={epochs: 0}", "schedule.epochs"),
        ("dpo", "lora=true", "lora"),
    ],
)  # fmt: skip
def test_bad_config_is_rejected_naming_the_field(command, override, field, capsys):
    config = CONFIGS / f"demo_{command}.yaml"
    assert cli.main([command, "--config", str(config), "--dry-run", override]) == 2
    assert f"config error: {field}:" in capsys.readouterr().err


def test_missing_inputs_fail_before_training(tmp_path, tiny_model_dir, capsys, monkeypatch):
    # demo_sft.yaml's data paths are relative (runs/demo/...): from an empty dir they do not exist,
    # even after a `make demo` in the checkout.
    monkeypatch.chdir(tmp_path)
    argv = [
        "sft",
        "--config",
        str(CONFIGS / "demo_sft.yaml"),
        f"model={tiny_model_dir}",
        f"output_dir={tmp_path}",
    ]
    assert cli.main(argv) == 2
    assert "phases[0].data[0]: file not found" in capsys.readouterr().err
    argv = ["dpo", "--config", str(CONFIGS / "demo_dpo.yaml"), f"model={tmp_path}", f"output_dir={tmp_path}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("infi dpo: config error: model: ") and "no config.json" in err


def test_world_size_must_divide_the_batch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    schedule = common.EpochScheduleConfig(global_batch_size=64, micro_batch_size=2)
    with pytest.raises(ConfigError, match=r"phases\[1\].schedule.global_batch_size: 64 is not divisible"):
        common.gradient_accumulation(schedule, "phases[1].schedule")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert common.gradient_accumulation(schedule, "schedule") == 8


def test_shared_checkpoint_and_logging_sections_map_onto_trl(monkeypatch):
    """`checkpoint:` / `logging:` are pretraining's sections (config.sections) with the same meaning."""
    from megatron_infi.config.schema import TrainConfig
    from megatron_infi.config.sections import CheckpointConfig, LoggingConfig

    for stage in (SFTStageConfig, DPOStageConfig, TrainConfig):
        assert issubclass(typing.get_type_hints(stage)["checkpoint"], CheckpointConfig)
        assert issubclass(typing.get_type_hints(stage)["logging"], LoggingConfig)
    monkeypatch.setenv("WORLD_SIZE", "1")

    def trl_args(checkpoint: CheckpointConfig, logging: LoggingConfig) -> dict:
        return common.trainer_arguments(
            output_dir=Path("o"), schedule=common.EpochScheduleConfig(global_batch_size=2),
            optim=common.OptimConfig(), checkpoint=checkpoint, logging=logging,
            runtime=common.RuntimeConfig(), run_name="r", field_prefix="schedule", has_eval=False,
        )  # fmt: skip

    args = trl_args(CheckpointConfig(save_interval=7, keep_last=3), LoggingConfig(log_interval=4, wandb=True))
    assert (args["save_strategy"], args["save_steps"], args["save_total_limit"]) == ("steps", 7, 3)
    assert (args["logging_steps"], args["report_to"]) == (4, ["tensorboard", "wandb"])
    args = trl_args(CheckpointConfig(save_interval=0), LoggingConfig(tensorboard=False))
    assert args["save_strategy"] == "no" and args["report_to"] == "none"


def _write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_sft_reader_skips_and_counts_bad_records(tmp_path):
    good = {
        "messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}],
        "meta": {},
    }
    path = _write_lines(
        tmp_path / "sft.jsonl",
        [
            good,
            "{not json",
            {"messages": [{"role": "user", "content": "no answer"}]},
            {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
            {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]},
            {"messages": "hello"},
            [1, 2],
            "",
            good,
        ],
    )
    skipped = SkipCounter()
    records = read_sft_records([path], skipped)
    assert records == [{"messages": good["messages"]}] * 2  # meta dropped
    assert skipped.counts == {
        "malformed-json": 1,
        "no-final-assistant-turn": 1,
        "unknown-role": 1,
        "empty-content": 1,
        "messages-not-a-list": 1,
        "not-an-object": 1,
    }
    assert skipped.examples["unknown-role"] == [f"{path}:4"]


def test_reader_errors_name_the_file(tmp_path):
    empty = _write_lines(tmp_path / "bad.jsonl", ["{oops", {"messages": []}])
    with pytest.raises(DataError, match="bad.jsonl: no usable SFT record"):
        read_sft_records([empty], SkipCounter())
    with pytest.raises(DataError, match="data file not found: .*missing.jsonl"):
        read_preference_records([tmp_path / "missing.jsonl"], SkipCounter())


def test_preference_reader(tmp_path):
    prompt = [{"role": "user", "content": "2+2?"}]
    good = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}]}  # fmt: skip
    path = _write_lines(
        tmp_path / "pairs.jsonl",
        [
            good,
            {**good, "rejected": good["chosen"]},
            {**good, "chosen": [{"role": "user", "content": "4"}]},
            {**good, "prompt": prompt + good["chosen"]},
            {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        ],
    )
    skipped = SkipCounter()
    assert read_preference_records([path], skipped) == [good]
    assert skipped.counts == {
        "chosen-equals-rejected": 1,
        "completion-not-assistant": 1,
        "prompt-ends-with-assistant": 1,
        "messages-not-a-list": 1,
    }


def test_held_out_split_is_seeded_and_disjoint():
    records = [{"i": i} for i in range(20)]
    train, held = split_held_out(records, 0.25, seed=3)
    assert len(held) == 5 and len(train) == 15
    assert sorted(r["i"] for r in train + held) == list(range(20))
    assert split_held_out(records, 0.25, seed=3) == (train, held)
    assert split_held_out(records, 0.0, seed=3) == (records, [])
