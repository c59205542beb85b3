"""Run the trainer the way users do (torchrun, gloo on CPU) and read back its per-step losses."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

from tests.processes import run_tree

REPO = Path(__file__).resolve().parents[2]


def base_config(run_dir: Path, tokenizer: Path, prefix: Path, **sections) -> dict:
    """A small, fast training config on the BoolQ corpus (hidden 64: the vocab dominates on CPU)."""
    cfg = {
        "run_dir": str(run_dir),
        "model": {
            "preset": "tiny",
            "hidden_size": 64,
            "ffn_hidden_size": 128,
            "num_attention_heads": 4,
            "num_query_groups": 2,
        },
        "data": {
            "tokenizer": str(tokenizer),
            "blend": [{"prefix": str(prefix)}],
            "seq_length": 64,
            "split": "98,2,0",
        },
        "train": {"train_iters": 4, "global_batch_size": 8, "micro_batch_size": 2, "seed": 7},
        "optimizer": {"lr": 2e-3, "min_lr": 2e-4},
        "schedule": {"style": "cosine", "warmup_iters": 1, "decay_iters": 6},
        "checkpoint": {"save_interval": 0},
        "logging": {"log_interval": 1, "tensorboard": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def run_train(cfg: dict, nproc: int = 1, overrides: list[str] = (), timeout: int = 600, check: bool = True):
    """Launch `torchrun -m megatron_infi.train`; returns the CompletedProcess."""
    cmd, env = train_command(cfg, nproc, overrides)
    proc = run_tree(cmd, cwd=REPO, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"training failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def train_command(cfg: dict, nproc: int = 1, overrides: list[str] = ()) -> tuple[list[str], dict]:
    """(command, environment) of a `torchrun -m megatron_infi.train` launch; writes the config."""
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "input.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "megatron_infi.train",
        "--config",
        str(config_path),
        *overrides,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1" if nproc > 1 else os.environ.get("OMP_NUM_THREADS", "2"),
        "PYTHONPATH": str(REPO),
        "PYTHONWARNINGS": "ignore",
    }
    return cmd, env


def losses(run_dir: Path) -> dict[int, float]:
    """Per-iteration training loss from the run's metrics log (later entries win on resume)."""
    out = {}
    for line in (Path(run_dir) / "logs" / "train_metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            out[record["iteration"]] = record["loss"]
    return out


def setup_in_process(cfg: dict):
    """A one-rank trainer inside the test process (gloo group of one), set up but not run."""
    from megatron_infi.config.core import from_dict, validate_tree
    from megatron_infi.config.schema import TrainConfig
    from megatron_infi.training.trainer import Trainer

    config = from_dict(TrainConfig, TrainConfig.preprocess(cfg))
    validate_tree(config)
    return Trainer(config).setup()


def train_in_process(cfg: dict):
    """One-rank training inside the test process (gloo group of one); returns (trainer, losses)."""
    trainer = setup_in_process(cfg)
    return trainer, trainer.run()
