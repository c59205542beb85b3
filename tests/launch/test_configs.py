"""Every YAML under launch/configs/ parses and validates with its stage's typed config (catches drift
between configs and code), and launch/estimate.py's arithmetic."""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import importlib.util
import math
import re
import sys

import pytest

import megatron_infi.models  # noqa: F401  (registers the architectures and presets the configs name)
from megatron_infi.config import core as config_core
from megatron_infi.config.core import load_config
from megatron_infi.config.schema import TrainConfig
from megatron_infi.training.metrics import flops_per_token
from tests.launch.conftest import REPO

# (glob under launch/configs, stage module, overrides the stage's caller supplies)
# The demo configs get their paths (and models to evaluate) from their callers, as in the comments.
DEMO_PATHS = ["data.tokenizer=runs/demo/tokenizer", "data.dir=runs/demo/data/out"]
RULES = [
    ("demo/pretrain.yaml", "megatron_infi.train", DEMO_PATHS),
    (
        "demo/anneal.yaml",
        "megatron_infi.train",
        [*DEMO_PATHS, "checkpoint.load=runs/demo/pretrain/checkpoints"],
    ),
    (
        "demo/cpt.yaml",
        "megatron_infi.train",
        [
            "data.tokenizer=runs/demo/cpt/smollm2-mcore/tokenizer",
            "data.blend=[{prefix: runs/demo/cpt/corpus/pubmed}]",
            "checkpoint.load=runs/demo/cpt/smollm2-mcore",
        ],
    ),
    ("pretrain/*.yaml", "megatron_infi.train", []),
    ("data/demo_recall.yaml", "megatron_infi.data_processing.pipelines.train_recall", []),
    ("data/demo_edu.yaml", "megatron_infi.data_processing.pipelines.train_quality", []),
    ("data/demo_math_quality.yaml", "megatron_infi.data_processing.pipelines.train_quality", []),
    ("data/*.yaml", "megatron_infi.data_processing.pipelines.pretrain", []),
    ("posttrain/*dpo_pairs.yaml", "megatron_infi.posttrain.dpo_pairs", []),
    ("posttrain/*dpo.yaml", "megatron_infi.posttrain.dpo", []),
    ("posttrain/*sft.yaml", "megatron_infi.posttrain.sft", []),
    (
        "eval/demo.yaml",
        "megatron_infi.evaluation.run",
        ["models=[{name: demo, path: runs/demo/hf, mode: chat}]"],
    ),
    (
        "eval/offline.yaml",
        "megatron_infi.evaluation.run",
        ["models=[{name: sft, path: runs/sft/hf, mode: chat}]"],
    ),
    (
        "eval/demo_real.yaml",
        "megatron_infi.evaluation.run",
        ["models=[{name: sft, path: runs/demo/sft/advanced/model, mode: chat}]"],
    ),
    ("eval/*.yaml", "megatron_infi.evaluation.run", []),
    (
        "sft_data/demo_synthesize.yaml",
        "megatron_infi.data_processing.sft.synthesize",
        ["llm.model=runs/demo/hf"],
    ),
    ("sft_data/*synthesize.yaml", "megatron_infi.data_processing.sft.synthesize", []),
    ("sft_data/*dpo_problems.yaml", "megatron_infi.data_processing.sft.dpo_problems", []),
    ("sft_data/*.yaml", "megatron_infi.data_processing.sft.select", []),
    ("vl/data_*.yaml", "megatron_infi.data_processing.vision.pipeline", []),
    ("vl/eval_*.yaml", "megatron_infi.evaluation.run", []),
    ("vl/*.yaml", "megatron_infi.train", []),
]
CONFIGS = sorted(
    p.relative_to(REPO / "launch" / "configs").as_posix() for p in REPO.glob("launch/configs/**/*.yaml")
)


def rule_for(name: str) -> tuple[str, list[str]] | None:
    for pattern, module, overrides in RULES:  # first match wins
        if fnmatch.fnmatch(name, pattern):
            return module, overrides
    return None


def test_every_config_has_a_stage():
    assert CONFIGS, "no configs found"
    unmapped = [name for name in CONFIGS if rule_for(name) is None]
    assert not unmapped, f"add these to RULES with their stage module: {unmapped}"


def _dry_run(module: str, name: str, overrides: list[str]) -> int:
    main = importlib.import_module(module).main
    return main(["--config", f"launch/configs/{name}", "--dry-run", *overrides])


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("name", CONFIGS)
def test_config_structure_matches_its_stage(name, monkeypatch):
    """Every key exists in the stage's dataclasses with the right type. Validation is switched off and
    the stage stops right after parsing, so inputs that exist only on a cluster do not matter."""
    module_name, overrides = rule_for(name)
    module = importlib.import_module(module_name)
    real_parse = module.parse_stage_config
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(config_core, "validate_tree", lambda obj, prefix="": None)

    def parse_then_stop(cls, prog, doc, argv, **checks):
        raise _Parsed(real_parse(cls, prog, doc, argv)[0])

    monkeypatch.setattr(module, "parse_stage_config", parse_then_stop)
    with pytest.raises(_Parsed) as parsed:
        module.main(["--config", f"launch/configs/{name}", "--dry-run", *overrides])
    assert dataclasses.is_dataclass(parsed.value.args[0])


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_or_only_misses_its_inputs(name, capsys, monkeypatch):
    """With validation on, a config passes, or fails only because an input path it names (a cluster
    path, or a demo artifact not built yet) is absent on this machine."""
    module, overrides = rule_for(name)
    monkeypatch.chdir(REPO)
    code = _dry_run(module, name, overrides)
    err = capsys.readouterr().err
    if code == 0:
        return
    text = (REPO / "launch" / "configs" / name).read_text() + " ".join(overrides)
    missing = [p for p in re.findall(r"[\w./-]+/[\w.-]+", err) if p in text and not (REPO / p).exists()]
    assert code == 2 and missing, f"{module} rejected {name} for a reason other than a missing input:\n{err}"


def _train(name: str) -> TrainConfig:
    return load_config(TrainConfig, REPO / "launch" / "configs" / name)


def test_infir_pretrain_matches_the_paper():
    """PAPERS.md: Llama-3.2-1B shape, ~900B tokens, global batch 2048 x 4096; continued from
    Llama-3.2-1B's converted weights (weights only), at a continued-pretraining LR (not the paper's
    from-scratch 1.4e-3), data tokenized by that model's tokenizer, step 0 validated."""
    cfg = _train("pretrain/infir_1b_pretrain.yaml")
    ckpt = cfg.checkpoint
    assert ckpt.load and not ckpt.load_optimizer and cfg.data.tokenizer == f"{ckpt.load}/tokenizer"
    assert cfg.optimizer.lr <= 3e-4 and cfg.schedule.warmup_iters > 0 and cfg.train.eval_at_start
    scratch = load_config(
        TrainConfig,
        REPO / "launch/configs/pretrain/infir_1b_pretrain.yaml",
        ["checkpoint.load=null", "optimizer.lr=1.4e-3"],
    )
    assert scratch.checkpoint.load is None and scratch.optimizer.lr == 1.4e-3
    m = cfg.model
    assert (m.num_layers, m.hidden_size, m.ffn_hidden_size) == (16, 2048, 8192)
    assert (m.num_attention_heads, m.num_query_groups, m.vocab_size, m.tie_embeddings) == (
        32,
        8,
        128256,
        True,
    )
    assert (cfg.train.global_batch_size, cfg.data.seq_length) == (2048, 4096)
    tokens = cfg.train.train_iters * cfg.train.global_batch_size * cfg.data.seq_length
    assert abs(tokens - 900e9) / 900e9 < 0.001
    assert cfg.stage == "pretrain" and cfg.train.precision == "bf16"


def test_infir_anneal_decays_to_min_lr_from_pretraining():
    pre, ann = _train("pretrain/infir_1b_pretrain.yaml"), _train("pretrain/infir_1b_anneal.yaml")
    assert ann.stage == "anneal"
    assert ann.checkpoint.load == f"{pre.run_dir}/checkpoints"
    assert ann.schedule.style in ("linear", "cosine") and ann.optimizer.lr == pre.optimizer.lr
    assert ann.optimizer.min_lr < ann.optimizer.lr
    tokens = ann.train.train_iters * ann.train.global_batch_size * ann.data.seq_length
    assert abs(tokens - 40e9) / 40e9 < 0.001
    weights = {e.domain: e.weight / sum(x.weight for x in b.data.blend) for b in (ann,) for e in b.data.blend}
    pre_weights = {e.domain: e.weight / sum(x.weight for x in pre.data.blend) for e in pre.data.blend}
    assert weights["web"] < pre_weights["web"] / 2  # most web data removed
    assert weights["code"] == pytest.approx(pre_weights["code"])  # code ratio kept
    assert weights["synthetic"] > 0 and "synthetic" not in pre_weights


@pytest.mark.parametrize(
    "name",
    [
        "pretrain/infir_1b_pretrain.yaml",
        "pretrain/infir_1b_anneal.yaml",
        "posttrain/infir_sft.yaml",
        "posttrain/infialign_sft.yaml",
        "posttrain/infialign_dpo.yaml",
        "vl/align_1.6b.yaml",
        "vl/render_1.6b.yaml",
        "vl/instruct_1.6b.yaml",
    ],
)
def test_paper_scale_configs_state_their_assumptions(name):
    header = "\n".join(
        line for line in (REPO / "launch" / "configs" / name).read_text().splitlines() if line.startswith("#")
    )
    for needed in ("GPUs", "MFU", "tokens/s", "wall time"):
        assert needed in header, f"{name}: header does not state {needed!r}"


# ---------------------------------------------------------------- estimate.py


def _estimate_module():
    spec = importlib.util.spec_from_file_location("launch_estimate", REPO / "launch" / "estimate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_estimate_uses_the_trainers_flops_and_the_config_schedule():
    est = _estimate_module()
    cfg = _train("pretrain/infir_1b_pretrain.yaml")
    result = est.from_train_config(cfg, gpus=64, mfu=0.4)
    assert result.flops_per_token == flops_per_token(cfg.model, 4096)
    # By hand from the Llama-3.2-1B shape: q,k,v,o + SwiGLU per layer, LM head once, attention term.
    h, kv, ffn, layers, vocab = 2048, 8 * 64, 8192, 16, 128256
    matmul = layers * (h * (h + 2 * kv) + h * h + 3 * h * ffn) + h * vocab
    assert result.matmul_params == matmul
    assert result.flops_per_token == 6 * matmul + 12 * layers * h * 4096
    assert result.tokens == cfg.train.train_iters * 2048 * 4096
    assert result.tokens_per_s == pytest.approx(64 * 0.4 * 989e12 / result.flops_per_token)
    assert result.wall_s == pytest.approx(result.tokens / result.tokens_per_s)
    # The paper's compute (64 H800 x ~90 h for 900B tokens) is ~40% MFU by this formula.
    assert 85 < result.wall_s / 3600 < 95


def test_estimate_cli(capsys):
    est = _estimate_module()
    code = est.main(
        [
            "--config",
            str(REPO / "launch/configs/pretrain/infir_1b_anneal.yaml"),
            "--gpus",
            "64",
            "--mfu",
            "0.4",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    hours = float(re.search(r"= ([\d.]+) h", out).group(1))
    assert math.isclose(hours, 4.0, abs_tol=0.1)
    assert (
        est.main(
            ["--preset", "qwen2.5-7b", "--seq", "32768", "--tokens", "6.6e9", "--gpus", "16", "--mfu", "0.3"]
        )
        == 0
    )
    assert "qwen2.5-7b" in capsys.readouterr().out
    assert (
        est.main(
            [
                "--config",
                str(REPO / "launch/configs/pretrain/infir_1b_anneal.yaml"),
                "--gpus",
                "0",
                "--mfu",
                "0.4",
            ]
        )
        == 2
    )
    assert "--gpus" in capsys.readouterr().err
