"""Fused AdamW for megatron-core's optimizer when neither Transformer Engine nor apex is installed.

megatron-core then falls back to `torch.optim.AdamW`, which on CUDA defaults to the multi-tensor
`foreach` implementation: several passes over params, grads and both moments per step. torch's
`fused` implementation does the update in one pass (the same arithmetic), which matters most when
the optimizer step is a visible share of a training step (few micro-batches per step).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def use_fused_adam(optimizers: Iterable[torch.optim.Optimizer]) -> int:
    """Switch torch Adam/AdamW optimizers whose params all live on CUDA to the fused kernel; returns
    how many param groups were switched. Existing `step` state moves to the params' device, where the
    fused kernel keeps it."""
    switched = 0
    for opt in optimizers:
        if not isinstance(opt, torch.optim.Adam | torch.optim.AdamW):
            continue
        params = [p for group in opt.param_groups for p in group["params"]]
        if not params or any(p.device.type != "cuda" or not p.is_floating_point() for p in params):
            continue
        for group in opt.param_groups:
            if group.get("differentiable"):
                continue
            group["fused"], group["foreach"] = True, False
            switched += 1
            for p in group["params"]:
                step = opt.state.get(p, {}).get("step")
                if isinstance(step, torch.Tensor):
                    opt.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)
    return switched
