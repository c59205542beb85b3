"""Config mistakes fail before anything is allocated, naming the field; --dry-run prints the
resolved config."""

import os
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
        (["logging.log_interval=0"], "logging.log_interval", ">= 1"),
        (["train.eval_interval=-1"], "train.eval_interval", ">= 0"),
        (["train.global_batch_size=0"], "train.global_batch_size", ">= 1"),
        (["train.eval_interval=5", "train.eval_iters=0"], "train.eval_iters", ">= 1"),
        (["schedule.decay_iters=0"], "schedule.decay_iters", ">= 1"),
        (["optimizer.adam_beta2=1.0"], "optimizer.adam_beta2", "[0, 1)"),
        (["data.num_workers=-1"], "data.num_workers", ">= 0"),
        (["parallel.ddp_bucket_size=0"], "parallel.ddp_bucket_size", ">= 1"),
        (["data.verify=maybe"], "data.verify", "one of"),
        # NaN passes every comparison a validate() makes; the coercion refuses non-finite floats.
        (["optimizer.lr=.nan"], "optimizer.lr", "finite"),
        (["optimizer.lr=nan"], "optimizer.lr", "finite"),
        (["optimizer.min_lr=.inf"], "optimizer.min_lr", "finite"),
        (["optimizer.clip_grad=1e999"], "optimizer.clip_grad", "finite"),
        (["data.blend=[{prefix: x, weight: .nan}]"], "data.blend[0].weight", "finite"),
        (["logging.peak_flops=-.inf"], "logging.peak_flops", "finite"),
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

    monkeypatch.setattr("megatron_infi.models.gpt.build_model", no_model)  # what the text family builds with
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


def _train_cli(tmp_path, boolq_corpus, args, env=None):
    tokenizer, prefix = boolq_corpus
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run"),
                "model": {"preset": "tiny"},
                "data": {"tokenizer": str(tokenizer), "blend": [{"prefix": str(prefix)}]},
            }
        )
    )
    cmd = [sys.executable, "-m", "megatron_infi.train", "--config", str(config), *args]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")} | (env or {})
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_cli_dry_run_and_error_exit(tmp_path, boolq_corpus):
    ok = _train_cli(tmp_path, boolq_corpus, ["--dry-run", "parallel.tensor=2"])
    assert ok.returncode == 0, ok.stderr
    resolved = yaml.safe_load(ok.stdout)
    assert resolved["parallel"]["tensor"] == 2 and resolved["model"]["hidden_size"] == 128
    bad = _train_cli(tmp_path, boolq_corpus, ["parallel.pipeline=3"])
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("infi train: config error: parallel.pipeline:")


@pytest.mark.parametrize(
    "override,field",
    [
        ("data.tokenizer={tmp}/no_tokenizer", "data.tokenizer"),
        ("data.blend=[{{prefix: {tmp}/missing}}]", "data.blend[0].prefix"),
        ("data.dir={tmp}/no_dir", "data.dir"),
        ("data.blend=[{{domain: web}}]", "data.blend[0].domain"),
        ("checkpoint.load={tmp}/no_ckpt", "checkpoint.load"),
    ],
)
def test_dry_run_checks_input_paths(tmp_path, boolq_corpus, override, field):
    """A dry run notes an input an earlier stage will write; launch/torchrun/run.sh, about to start
    the stage, sets INFI_REQUIRE_INPUTS=1 and its dry run fails on it, as the real run does."""
    args = [override.format(tmp=tmp_path), *([f"data.dir={tmp_path}"] if "domain" in override else [])]
    planned = _train_cli(tmp_path, boolq_corpus, ["--dry-run", *args])
    assert planned.returncode == 0, planned.stderr
    assert f"train: note: {field}: " in planned.stderr and "does not exist yet" in planned.stderr
    for argv, env in ((["--dry-run", *args], {"INFI_REQUIRE_INPUTS": "1"}), (args, {})):
        bad = _train_cli(tmp_path, boolq_corpus, argv, env)
        assert bad.returncode == 2, bad.stdout
        assert bad.stderr.strip().splitlines()[-1].startswith(f"infi train: config error: {field}:"), (
            bad.stderr
        )
        assert bad.stdout == ""  # nothing printed as if the config were fine


def test_layout_refused_from_world_size_before_process_group(tmp_path, boolq_corpus, monkeypatch):
    """parallel.tensor=4 on 2 ranks: refused from WORLD_SIZE (set by torchrun and by run.sh's dry run)
    before any rank joins a process group; before, megatron-core raised after init_process_group."""
    env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for args in (["--dry-run", "parallel.tensor=4"], ["parallel.tensor=4"]):
        bad = _train_cli(tmp_path, boolq_corpus, args, env)
        assert bad.returncode == 2, bad.stderr
        assert (
            "infi train: config error: parallel: world size 2 is not a multiple of tensor x pipeline = 4"
            in bad.stderr
        )
    from megatron_infi.training import trainer as trainer_mod

    def no_group(*args, **kwargs):
        raise AssertionError("the process group was initialised before the layout check")

    monkeypatch.setattr(trainer_mod, "init_model_parallel", no_group)
    monkeypatch.setenv("WORLD_SIZE", "2")
    tokenizer, prefix = boolq_corpus
    cfg = load_config(
        TrainConfig,
        None,
        [f"data.tokenizer={tokenizer}", f"data.blend=[{{prefix: {prefix}}}]", "parallel.tensor=4"],
    )
    with pytest.raises(ConfigError, match="world size 2"):
        trainer_mod.Trainer(cfg).setup()


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
