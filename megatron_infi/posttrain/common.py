"""Pieces shared by `infi sft` and `infi dpo`: config sections (with `checkpoint:` / `logging:` from
config.sections, shared with pretraining), device selection, TRL argument
building, checkpoint discovery, atomic HF export, weight fingerprints and loss plots.

Device-specific choices (precision, attention kernel, gradient checkpointing) sit in the small
`select_*` functions; everything else is one code path for CPU and GPU, one process or many
(`accelerate launch` with the configs in launch/accelerate/).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from megatron_infi.config.core import ConfigError
from megatron_infi.config.sections import CheckpointConfig, LoggingConfig
from megatron_infi.utils import atomic_write_json


@dataclass
class OptimConfig:
    """AdamW + LR schedule of one training run (or one SFT phase)."""

    lr: float = 2e-5
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")


@dataclass
class EpochScheduleConfig:
    """How long and how big, TRL-style: epochs (or a step cap) and the global / per-device batch.
    (Pretraining's `schedule:` is the LR over iterations instead: config.schema.LRScheduleConfig.)"""

    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    global_batch_size: int = 64
    micro_batch_size: int = 1

    def validate(self) -> None:
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError("epochs", f"must be > 0 when max_steps is unset, got {self.epochs}")
        if self.micro_batch_size < 1:
            raise ConfigError("micro_batch_size", f"must be >= 1, got {self.micro_batch_size}")
        if self.global_batch_size < self.micro_batch_size or self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                "global_batch_size",
                f"{self.global_batch_size} is not a multiple of micro_batch_size={self.micro_batch_size}",
            )


@dataclass
class RuntimeConfig:
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on a bf16-capable GPU, fp32 on CPU
    gradient_checkpointing: bool | None = None  # null: on for GPU, off on CPU
    attn_implementation: str = "auto"  # auto: flash_attention_2 on GPU when installed, else sdpa
    seed: int = 42
    dataset_num_proc: int | None = None
    dataloader_num_workers: int = 0


# ---------------------------------------------------------------- device selection


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def select_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "bf16" if on_cuda() and torch.cuda.is_bf16_supported() else "fp32"


def select_attn_implementation(requested: str) -> str:
    if requested != "auto":
        return requested
    if on_cuda() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def select_gradient_checkpointing(requested: bool | None) -> bool:
    # Recomputing activations saves GPU memory; on CPU memory is plentiful and time is not.
    return on_cuda() if requested is None else requested


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def gradient_accumulation(schedule: EpochScheduleConfig, field_prefix: str) -> int:
    per_step = schedule.micro_batch_size * world_size()
    if schedule.global_batch_size % per_step:
        raise ConfigError(
            f"{field_prefix}.global_batch_size",
            f"{schedule.global_batch_size} is not divisible by micro_batch_size x world size = "
            f"{schedule.micro_batch_size} x {world_size()}",
        )
    return schedule.global_batch_size // per_step


def trainer_arguments(
    *,
    output_dir: Path,
    schedule: EpochScheduleConfig,
    optim: OptimConfig,
    checkpoint: CheckpointConfig,
    logging: LoggingConfig,
    runtime: RuntimeConfig,
    run_name: str,
    field_prefix: str,
    has_eval: bool,
) -> dict[str, Any]:
    """Keyword arguments shared by TRL's SFTConfig and DPOConfig (both are TrainingArguments)."""
    precision = select_precision(runtime.precision)
    if logging.wandb:
        os.environ.setdefault("WANDB_PROJECT", logging.wandb_project)
        os.environ.setdefault("WANDB_MODE", "offline")  # no run may reach a server unless asked to
    return {
        "output_dir": str(output_dir),
        "run_name": logging.run_name or run_name,
        "use_cpu": not on_cuda(),
        "bf16": precision == "bf16",
        "fp16": False,
        "activation_checkpointing": select_gradient_checkpointing(runtime.gradient_checkpointing),
        "per_device_train_batch_size": schedule.micro_batch_size,
        "per_device_eval_batch_size": schedule.micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation(schedule, field_prefix),
        "num_train_epochs": schedule.epochs,
        "max_steps": schedule.max_steps if schedule.max_steps > 0 else -1,
        "learning_rate": optim.lr,
        "lr_scheduler_type": optim.scheduler,
        "warmup_steps": optim.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "weight_decay": optim.weight_decay,
        "adam_beta1": optim.adam_beta1,
        "adam_beta2": optim.adam_beta2,
        "max_grad_norm": optim.max_grad_norm,
        # save_interval 0: no periodic checkpoint (a preemption signal still saves one).
        "save_strategy": "steps" if checkpoint.save_interval else "no",
        "save_steps": max(checkpoint.save_interval, 1),  # unused with save_strategy "no"
        "save_total_limit": checkpoint.keep_last,
        "eval_strategy": "epoch" if has_eval else "no",
        "logging_steps": logging.log_interval,
        "logging_first_step": True,
        "report_to": logging.reporters or "none",
        "seed": runtime.seed,
        "data_seed": runtime.seed,
        "dataset_num_proc": runtime.dataset_num_proc,
        "dataloader_num_workers": runtime.dataloader_num_workers,
    }


def load_causal_lm(path: str | Path, runtime: RuntimeConfig) -> Any:
    """Load an HF causal LM the way TRL would from a path (device map, dtype, attention kernel).

    Call it after the TRL config exists, so that DeepSpeed ZeRO-3 partitions the weights at load.
    """
    from trl.trainer.utils import create_model_from_path

    return create_model_from_path(
        str(path),
        dtype="bfloat16" if select_precision(runtime.precision) == "bf16" else "float32",
        attn_implementation=select_attn_implementation(runtime.attn_implementation),
    )


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


# ---------------------------------------------------------------- checkpoints and export


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """Newest `checkpoint-N/` whose trainer_state.json (written last by the Trainer) parses and says step N.

    A crash mid-save leaves a checkpoint dir without a valid state file; it is skipped, not resumed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        if not child.is_dir() or not child.name.startswith("checkpoint-"):
            continue
        try:
            step = int(child.name.split("-", 1)[1])
            state = json.loads((child / "trainer_state.json").read_text())
        except (ValueError, OSError):
            continue
        if state.get("global_step") == step:
            found.append((step, child))
    return max(found)[1] if found else None


def save_hf_dir(trainer, out_dir: str | Path) -> Path:
    """Export the trained model + tokenizer as an HF dir, atomically: `<out>.partial` then rename.

    Every rank must call this (ZeRO-3 / FSDP gather the weights collectively); rank 0 renames.
    """
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    accelerator = trainer.accelerator
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    trainer.save_model(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(partial, out_dir)
    accelerator.wait_for_everyone()
    return out_dir


def write_json_main(trainer, path: str | Path, obj: Any) -> None:
    if trainer.accelerator.is_main_process:
        atomic_write_json(path, obj)


def finish_wandb() -> None:
    """Close the wandb run a trainer opened: transformers leaves it open after training, and the next
    phase's trainer would otherwise log into it with its step counter restarted."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def set_tensorboard_dir(trainer, log_dir: str | Path) -> None:
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(log_dir)


def weights_fingerprint(model) -> str | None:
    """sha256 of the full state dict, or None when the weights are sharded (ZeRO-3 / FSDP)."""
    import torch
    from trl.trainer.utils import hash_module

    for param in model.parameters():
        if (
            hasattr(param, "ds_id")
            or type(param.data).__name__ == "DTensor"
            or param.device == torch.device("meta")
        ):
            return None
    return hash_module(model)


def fingerprint_callback(record: dict[str, Any]):
    """A TrainerCallback that stores the weights' fingerprint at train begin and end in `record`."""
    from transformers import TrainerCallback

    class _Fingerprint(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.is_world_process_zero and model is not None:
                record["start_weights_sha256"] = weights_fingerprint(model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if state.is_world_process_zero and model is not None:
                record["end_weights_sha256"] = weights_fingerprint(model)

    return _Fingerprint()


# ---------------------------------------------------------------- curves


def losses(log_history: list[dict[str, Any]], key: str = "loss") -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row[key])) for row in log_history if key in row and "step" in row]


def plot_curves(
    series: dict[str, list[tuple[int, float]]],
    path: str | Path,
    title: str,
    ylabel: str,
    sequential: bool = True,
) -> None:
    """One line per named series of (step, value); with `sequential`, each series' steps continue
    where the previous one ended (curriculum phases), else all share one step axis."""
    from megatron_infi.plots import label_axes, pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 4))
    offset = 0
    for name, points in series.items():
        if not points:
            continue
        steps = [offset + step for step, _ in points]
        ax.plot(steps, [value for _, value in points], marker=".", label=name)
        if sequential:
            offset = steps[-1]
    label_axes(ax, "optimizer step", ylabel, title)
    ax.legend()
    save_figure(fig, path)
