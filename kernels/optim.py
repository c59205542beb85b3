"""Torch's fused AdamW for megatron-core's optimizer when neither Transformer Engine nor apex is
installed (the trainer's `optimizer.impl`, megatron_infi/training/optim.py).

megatron-core then falls back to `torch.optim.AdamW`, which on CUDA defaults to the multi-tensor
`foreach` implementation: several passes over params, grads and both moments per step. torch's
`fused` implementation does the update in one pass (the same arithmetic), which matters most when
the optimizer step is a visible share of a training step (few micro-batches per step).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def fused_adam_devices() -> frozenset[str]:
    """Device types torch has a fused Adam/AdamW kernel for."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return frozenset(_get_fused_kernels_supported_devices())


def set_fused_adam(optimizers: Iterable[torch.optim.Optimizer], fused: bool) -> int:
    """Switch torch Adam/AdamW optimizers to the fused kernel (`fused=True`) or to torch's default
    implementation; returns how many param groups were set. Optimizers with parameters on a device
    without a fused kernel are left alone when asked for it (the count tells).

    Existing `step` state moves to where the chosen implementation keeps it: the fused kernel
    reads it on the parameters' device as fp32, the default one as a CPU scalar.
    """
    supported = fused_adam_devices()
    switched = 0
    for opt in optimizers:
        if not isinstance(opt, torch.optim.Adam | torch.optim.AdamW):
            continue
        params = [p for group in opt.param_groups for p in group["params"]]
        if not params or any(not p.is_floating_point() for p in params):
            continue
        if fused and any(p.device.type not in supported for p in params):
            continue
        for group in opt.param_groups:
            if group.get("differentiable") or group.get("capturable"):
                continue
            group["fused"], group["foreach"] = (True, False) if fused else (None, None)
            switched += 1
            for p in group["params"]:
                step = opt.state.get(p, {}).get("step")
                if isinstance(step, torch.Tensor):
                    where = p.device if fused else torch.device("cpu")
                    opt.state[p]["step"] = step.to(device=where, dtype=torch.float32)
    return switched
