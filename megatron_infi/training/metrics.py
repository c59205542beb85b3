"""FLOPs / MFU accounting and the training log sinks (console, tensorboard, wandb offline)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

from megatron_infi.config.core import to_dict
from megatron_infi.config.schema import ModelConfig, TrainConfig

log = logging.getLogger("megatron_infi")


def matmul_params(model: ModelConfig) -> int:
    """Parameters that take part in a matmul per token: all linear layers plus the LM head."""
    h, q, kv = model.hidden_size, query_channels(model), model.num_query_groups * model.head_dim
    per_layer = h * (q + 2 * kv) + q * h + h * 2 * model.ffn_hidden_size + model.ffn_hidden_size * h
    return model.num_layers * per_layer + h * model.vocab_size


def query_channels(model: ModelConfig) -> int:
    """heads x head_dim: the width of q, of the attention output and of its score / value matmuls
    (hidden_size unless the architecture sizes heads on their own, as Qwen3 does)."""
    return model.num_attention_heads * model.head_dim


def flops_per_token(model: ModelConfig, seq_length: int) -> float:
    """Training FLOPs per token: 6 x matmul params + 12 x layers x heads x head_dim x seq (attention)."""
    return 6.0 * matmul_params(model) + 12.0 * model.num_layers * query_channels(model) * seq_length


class MetricsLogger:
    """Console line every `log_interval` steps; tensorboard and wandb (offline) on rank 0."""

    def __init__(self, cfg: TrainConfig, is_main: bool, world_size: int):
        self.cfg = cfg
        self.is_main = is_main
        self.world_size = world_size
        self.flops_per_token = flops_per_token(cfg.model, cfg.data.seq_length)
        self.tb = None
        self.wandb = None
        self.history_path = Path(cfg.run_dir) / "logs" / "train_metrics.jsonl"
        if not is_main:
            return
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(cfg.run_dir) / "tensorboard"))
        if cfg.logging.wandb:
            import wandb

            self.wandb = wandb.init(
                project=cfg.logging.wandb_project,
                mode=os.environ.get("WANDB_MODE", "offline"),  # no run reaches a server unless asked to
                dir=str(Path(cfg.run_dir)),
                config=to_dict(cfg),
                name=cfg.logging.run_name or Path(cfg.run_dir).name,
                resume="allow",
            )
        self._window_start = time.perf_counter()
        self._window_steps = 0

    def tokens_per_step(self) -> int:
        return self.cfg.train.global_batch_size * self.cfg.data.seq_length

    def step(self, iteration: int, loss: float, lr: float, grad_norm: float | None) -> dict | None:
        """Record one step; every log_interval steps print and return the window's metrics."""
        if not self.is_main:
            return None
        record = {"iteration": iteration, "loss": loss, "lr": lr, "grad_norm": grad_norm}
        with open(self.history_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self._window_steps += 1
        if iteration % self.cfg.logging.log_interval and iteration != self.cfg.train.train_iters:
            return None
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - self._window_start
        tokens_per_s = self._window_steps * self.tokens_per_step() / max(elapsed, 1e-9)
        record["tokens_per_s"] = tokens_per_s
        line = (
            f"iter {iteration:>7}/{self.cfg.train.train_iters} | loss {loss:.4f} | lr {lr:.3e} | "
            f"grad norm {grad_norm if grad_norm is not None else float('nan'):.3f} | tokens/s {tokens_per_s:,.0f}"
        )
        if torch.cuda.is_available():
            mfu = tokens_per_s * self.flops_per_token / (self.world_size * self.cfg.logging.peak_flops)
            record["mfu"] = mfu
            record["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            line += f" | MFU {100 * mfu:.1f}% | mem {record['peak_mem_gib']:.1f} GiB"
        log.info(line)
        if self.tb:
            for key, value in record.items():
                if key != "iteration" and value is not None:
                    self.tb.add_scalar(f"train/{key}", value, iteration)
        if self.wandb:
            self.wandb.log({f"train/{k}": v for k, v in record.items() if k != "iteration"}, step=iteration)
        self._window_start = time.perf_counter()
        self._window_steps = 0
        return record

    def validation(self, iteration: int, loss: float) -> None:
        if not self.is_main:
            return
        log.info(f"iter {iteration:>7} | validation loss {loss:.4f}")
        with open(self.history_path, "a") as handle:
            handle.write(json.dumps({"iteration": iteration, "valid_loss": loss}) + "\n")
        if self.tb:
            self.tb.add_scalar("valid/loss", loss, iteration)
        if self.wandb:
            self.wandb.log({"valid/loss": loss}, step=iteration)

    def close(self) -> None:
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()
