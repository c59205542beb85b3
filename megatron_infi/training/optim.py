"""Optimizer (megatron-core's, with the distributed optimizer when asked) and LR schedule."""

from __future__ import annotations

import torch
from megatron.core.optimizer import OptimizerConfig as McoreOptimizerConfig
from megatron.core.optimizer import get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from megatron_infi.config.core import ConfigError
from megatron_infi.config.schema import TrainConfig
from megatron_infi.kernels.optim import fused_adam_devices, set_fused_adam

_DECAY_STYLE = {"cosine": "cosine", "linear": "linear", "constant": "constant", "wsd": "WSD"}
_WSD_STYLE = {
    "linear": "linear",
    "cosine": "cosine",
    "exponential": "exponential",
    "minus_sqrt": "minus_sqrt",
}


def build_optimizer(cfg: TrainConfig, model_chunks: list[torch.nn.Module], dtype: torch.dtype):
    opt = cfg.optimizer
    config = McoreOptimizerConfig(
        optimizer="adam",
        lr=opt.lr,
        min_lr=opt.min_lr,
        weight_decay=opt.weight_decay,
        adam_beta1=opt.adam_beta1,
        adam_beta2=opt.adam_beta2,
        adam_eps=opt.adam_eps,
        clip_grad=opt.clip_grad,
        bf16=dtype == torch.bfloat16,
        params_dtype=dtype,
        use_distributed_optimizer=cfg.parallel.distributed_optimizer,
    )
    return get_megatron_optimizer(config, model_chunks, use_gloo_process_groups=torch.cuda.is_available())


def resolve_adam_impl(requested: str, device_type: str) -> str:
    """`optimizer.impl` on this machine: 'fused' (one-pass AdamW kernel) or 'torch' (torch's default
    AdamW, multi-tensor on CUDA). auto: fused on CUDA; CPU keeps torch's default, the reference
    numerics of the CPU tests and the demo.

    megatron-core itself uses Transformer Engine's or apex's FusedAdam when either is installed,
    which is 'fused' and leaves no torch AdamW to choose.
    """
    from megatron.core.optimizer import USING_PYTORCH_OPTIMIZER

    if not USING_PYTORCH_OPTIMIZER:
        if requested == "torch":
            raise ConfigError(
                "optimizer.impl", "torch: megatron-core uses Transformer Engine's / apex's FusedAdam here"
            )
        return "fused"
    if requested == "auto":
        return "fused" if device_type == "cuda" else "torch"
    if requested == "fused" and device_type not in fused_adam_devices():
        raise ConfigError("optimizer.impl", f"fused: torch has no fused AdamW for {device_type} devices")
    return requested


def apply_adam_impl(optimizer, impl: str) -> None:
    """Put the resolved `optimizer.impl` on megatron-core's torch AdamW; after building the optimizer
    and again after loading a checkpoint, whose param groups carry the choice they were saved with."""
    from megatron.core.optimizer import USING_PYTORCH_OPTIMIZER

    if USING_PYTORCH_OPTIMIZER:
        set_fused_adam(inner_torch_optimizers(optimizer), fused=impl == "fused")


def build_scheduler(cfg: TrainConfig, optimizer) -> OptimizerParamScheduler:
    sched, opt = cfg.schedule, cfg.optimizer
    decay_iters = sched.decay_iters or cfg.train.train_iters
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=opt.lr,
        min_lr=opt.min_lr,
        lr_warmup_steps=sched.warmup_iters,
        lr_decay_steps=max(decay_iters, sched.warmup_iters + 1),
        lr_decay_style=_DECAY_STYLE[sched.style],
        start_wd=opt.weight_decay,
        end_wd=opt.weight_decay,
        wd_incr_steps=max(cfg.train.train_iters, 1),
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=True,
        override_opt_param_scheduler=False,
        wsd_decay_steps=sched.wsd_decay_iters if sched.style == "wsd" else None,
        lr_wsd_decay_style=_WSD_STYLE[sched.wsd_decay_style] if sched.style == "wsd" else None,
    )


def inner_torch_optimizers(optimizer) -> list[torch.optim.Optimizer]:
    """The torch optimizers inside megatron-core's (possibly chained) wrapper."""
    chained = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    return [getattr(o, "optimizer", o) for o in chained if getattr(o, "optimizer", o) is not None]


def untie_adam_steps(optimizer) -> int:
    """Give every parameter its own Adam `step` tensor; returns how many were shared.

    megatron-core's distributed-optimizer load puts ONE `step` tensor object on every parameter;
    torch's Adam increments it in place once per parameter per step, so after resume all
    bias corrections run ahead and the run silently drifts.
    """
    originals: dict[int, torch.Tensor] = {}  # keeps the originals alive so ids stay unique
    shared = 0
    for inner in inner_torch_optimizers(optimizer):
        for state in inner.state.values():
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                shared += id(step) in originals
                originals[id(step)] = step
                state["step"] = step.clone()
    return shared


def materialize_adam_state(optimizer) -> None:
    """Create zero Adam state (with `step`) for parameters that have none yet.

    megatron-core's distributed optimizer builds its load-time state dict from the live optimizer
    state and, with torch's Adam (no TE / apex), asserts that every parameter has a `step`: a fresh
    optimizer has none. The zeros are overwritten by the checkpoint's values.
    """
    for inner in inner_torch_optimizers(optimizer):
        for group in inner.param_groups:
            for param in group["params"]:
                if not inner.state.get(param):
                    inner.state[param] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
                    }
