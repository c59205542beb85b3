"""Config sections every training stage shares: pretraining / annealing (`megatron_infi.train`) and
post-training (`infi sft`, `infi dpo`) read `checkpoint:` and `logging:` with the same fields and
meanings. What really differs stays in the stage's own config under its own name: megatron's LR
schedule over iterations (`config.schema.LRScheduleConfig`) and TRL's epochs / step cap / batch
(`posttrain.common.EpochScheduleConfig`), and pretraining's extra checkpoint and logging fields
(`checkpoint.load*`, `logging.peak_flops`).
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_infi.errors import ConfigError


@dataclass
class CheckpointConfig:
    # Steps between checkpoints; 0: none until the end (pretraining) or none at all (post-training,
    # whose result is the exported model). A preempted or crashed run loses at most this many steps.
    save_interval: int = 500
    # Newest checkpoints kept: the last one, and one to fall back to should the last be damaged.
    keep_last: int = 2
    # Continue from the newest complete checkpoint of this run's own output dir.
    resume: bool = True

    def validate(self) -> None:
        if self.save_interval < 0:
            raise ConfigError("save_interval", f"must be >= 0, got {self.save_interval}")
        if self.keep_last < 1:
            raise ConfigError("keep_last", f"must be >= 1, got {self.keep_last}")


@dataclass
class LoggingConfig:
    log_interval: int = 10  # steps between console lines / logged metrics
    # Metric sinks inside the run dir. wandb (offline unless WANDB_MODE says otherwise) is off by
    # default: it needs an account to view and only adds files when nobody looks at them.
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "megatron-infi"
    run_name: str | None = None  # default: the run's directory name

    def validate(self) -> None:
        if self.log_interval < 1:
            raise ConfigError("log_interval", f"must be >= 1, got {self.log_interval}")

    @property
    def reporters(self) -> list[str]:
        return [name for name in ("tensorboard", "wandb") if getattr(self, name)]
