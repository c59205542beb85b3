"""Config mistakes fail before anything is allocated, naming the field; --dry-run prints the
resolved config."""

import subprocess
import sys

import pytest
import yaml

from megatron_infi.config.core import ConfigError, load_config
from megatron_infi.config.schema import TrainConfig
from megatron_infi.models import architecture
from tests.training.launch import REPO

BASE = ["data.tokenizer=tok", "data.blend=[{prefix: data/x}]"]


def _error(overrides) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, BASE + overrides)
    return info.value


def test_preset_expands_and_overrides_win():
    cfg = load_config(
        TrainConfig, None, BASE + ["model.preset=llama3.2-1b", "model.num_layers=2", "optimizer.lr=1e-4"]
    )
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.num_query_groups) == (2, 2048, 8)
    assert cfg.model.rope_scaling.type == "llama3" and cfg.model.rope_scaling.factor == 32.0
    assert cfg.model.tie_embeddings and cfg.optimizer.lr == 1e-4
    qwen = load_config(TrainConfig, None, BASE + ["model.preset=qwen2.5-7b"])
    assert qwen.model.arch == "qwen2" and architecture("qwen2").qkv_bias and not qwen.model.tie_embeddings


def test_head_dim_follows_the_heads_unless_the_architecture_fixes_it():
    llama = load_config(TrainConfig, None, BASE + ["model.preset=llama3.2-1b", "model.hidden_size=1024"])
    assert llama.model.head_dim == 1024 // 32
    qwen3 = load_config(TrainConfig, None, BASE + ["model.preset=qwen3-0.6b", "model.hidden_size=512"])
    assert qwen3.model.arch == "qwen3" and qwen3.model.head_dim == 128 and architecture("qwen3").qk_norm
    # Heads that do not split hidden_size are fine once head_dim is given.
    odd = load_config(TrainConfig, None, BASE + ["model.hidden_size=100", "model.head_dim=16"])
    assert (odd.model.hidden_size, odd.model.head_dim) == (100, 16)


@pytest.mark.parametrize(
    "overrides,field,words",
    [
        (["parallel.tensor=3"], "parallel.tensor", "num_attention_heads=8"),
        (["parallel.tensor=8"], "parallel.tensor", "num_query_groups=4"),
        (["parallel.pipeline=3"], "parallel.pipeline", "num_layers=4"),
        (["train.global_batch_size=7"], "train.global_batch_size", "micro_batch_size"),
        (["optimizer.min_lr=1.0"], "optimizer.min_lr", "lr="),
        (["model.hidden_sise=3"], "model.hidden_sise", "unknown field"),
        (["train.train_iters=abc"], "train.train_iters", "integer"),
        (["schedule.style=triangle"], "schedule.style", "one of"),
        (["stage=anneal"], "checkpoint.load", "anneal"),
        (["model.preset=gpt5"], "model.preset", "unknown preset"),
        (
            ["model.arch=mamba"],
            "model.arch",
            "unknown architecture 'mamba' (known: llama, mistral, qwen2, qwen3)",
        ),
        # Shapes that used to divide by zero or build a broken model.
        (["model.num_query_groups=0"], "model.num_query_groups", "must be positive, got 0"),
        (["model.num_attention_heads=0"], "model.num_attention_heads", "must be positive, got 0"),
        (["model.make_vocab_size_divisible_by=0"], "model.make_vocab_size_divisible_by", "positive"),
        (["model.num_layers=-1"], "model.num_layers", "must be positive, got -1"),
        (["model.ffn_hidden_size=0"], "model.ffn_hidden_size", "must be positive"),
        (["model.head_dim=0"], "model.head_dim", "positive and even"),
        (["model.head_dim=15"], "model.head_dim", "positive and even"),
        (["model.hidden_size=100"], "model.hidden_size", "set model.head_dim"),
        (["model.rope_theta=0"], "model.rope_theta", "> 0"),
        (["model.norm_eps=.nan"], "model.norm_eps", "finite"),
        (["model.rope_scaling.factor=0"], "model.rope_scaling.factor", "> 0"),
    ],
)
def test_mistakes_name_the_field(overrides, field, words):
    err = _error(overrides)
    assert err.field == field, str(err)
    assert words in str(err)


def test_world_layout_is_checked():
    cfg = load_config(
        TrainConfig,
        None,
        BASE + ["parallel.tensor=2", "train.global_batch_size=4", "train.micro_batch_size=4"],
    )
    with pytest.raises(ConfigError, match="world size 3"):
        cfg.validate_world(3)
    assert cfg.validate_world(2) == 1
    pp = load_config(
        TrainConfig,
        None,
        BASE + ["parallel.pipeline=2", "train.global_batch_size=2", "train.micro_batch_size=2"],
    )
    with pytest.raises(ConfigError, match="microbatches") as info:
        pp.validate_world(2)
    assert info.value.field == "train.global_batch_size"


def _preflight_error(monkeypatch, tmp_path, boolq_corpus, overrides):
    """Run Trainer.setup in-process; fail the test if a model gets built before the error."""
    from megatron_infi.training import trainer as trainer_mod

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the config error was raised")

    monkeypatch.setattr(trainer_mod, "build_model", no_model)
    tokenizer, prefix = boolq_corpus
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"run_dir={tmp_path / 'run'}",
            f"data.tokenizer={tokenizer}",
            f"data.blend=[{{prefix: {prefix}}}]",
            *overrides,
        ],
    )
    with pytest.raises(ConfigError) as info:
        trainer_mod.Trainer(cfg).setup()
    return info.value


def test_missing_prefix_fails_before_model(monkeypatch, tmp_path, boolq_corpus):
    err = _preflight_error(
        monkeypatch, tmp_path, boolq_corpus, [f"data.blend=[{{prefix: {tmp_path}/nope, weight: 1}}]"]
    )
    assert err.field == "data.blend[0].prefix" and "nope.bin" in str(err)


def test_tokenizer_larger_than_model_fails_before_model(monkeypatch, tmp_path, boolq_corpus):
    err = _preflight_error(monkeypatch, tmp_path, boolq_corpus, ["model.vocab_size=32000"])
    assert err.field == "data.tokenizer" and "128256" in str(err)


def test_cli_dry_run_and_error_exit(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"model": {"preset": "tiny"}, "data": {"tokenizer": "t", "blend": [{"prefix": "p"}]}})
    )
    cmd = [sys.executable, "-m", "megatron_infi.train", "--config", str(config)]
    ok = subprocess.run([*cmd, "--dry-run", "parallel.tensor=2"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    resolved = yaml.safe_load(ok.stdout)
    assert resolved["parallel"]["tensor"] == 2 and resolved["model"]["hidden_size"] == 128
    bad = subprocess.run([*cmd, "parallel.pipeline=3"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "infi train: config error: parallel.pipeline: pipeline=3 x virtual_pipeline=1 does not divide "
        "model.num_layers=4"
    ]


@pytest.mark.parametrize(
    "override",
    ["model.num_query_groups=0", "model.num_attention_heads=0", "model.make_vocab_size_divisible_by=0"],
)
def test_cli_dry_run_rejects_zero_sizes_in_one_line(tmp_path, override):
    """Each of these raised ZeroDivisionError (a trace, exit 1) even under --dry-run."""
    cmd = [sys.executable, "-m", "megatron_infi.train", "--dry-run", *BASE, override]
    bad = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == f"infi train: config error: {override.split('=')[0]}: must be positive, got 0\n"
