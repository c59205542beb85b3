"""Fixes for megatron-core 0.19 bugs on the torch-optimizer path (no TE / apex), which is our default
on CPU and on GPUs without those packages. Each is applied once, is idempotent, and has a test.
"""

from __future__ import annotations

import functools

_APPLIED = False


def _skip_missing_step(orig):
    """Loading a 'fully_reshardable' distributed-optimizer checkpoint copies every tensor in the
    parameter's live state from the checkpoint, but torch Adam's `step` is not among the saved
    per-parameter tensors (it is restored from the param groups), so the load raises KeyError 'step'.
    Hide `step` from the copy and put it back."""

    @functools.wraps(orig)
    def wrapper(self, model_param, tensors):
        if "step" in tensors or self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            return orig(self, model_param, tensors)
        group_index, group_order = self.model_param_group_index_map[model_param]
        main_param = self.optimizer.param_groups[group_index]["params"][group_order]
        state = self.optimizer.state.get(main_param, {})
        step = state.pop("step", None)
        try:
            return orig(self, model_param, tensors)
        finally:
            if step is not None:
                state["step"] = step

    return wrapper


def apply() -> None:
    global _APPLIED
    if _APPLIED:
        return
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    DistributedOptimizer._set_main_param_and_optimizer_states = _skip_missing_step(
        DistributedOptimizer._set_main_param_and_optimizer_states
    )
    _APPLIED = True
