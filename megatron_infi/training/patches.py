"""Every process-wide patch, applied in one visible place.

An entry point that runs megatron-core calls `apply()` first (`python -m megatron_infi.train`, `infi
convert ...`, the demo); nothing patches as a side effect of an import or a predicate, and
`training.distributed.init_process_group` refuses to start before `apply()` has run.

| patch | what it changes | when |
|---|---|---|
| cpu | torch.cuda shims + megatron-core's RNG tracker on the CPU (training/cpu_adapter.py) | no CUDA |
| distopt-step | DistributedOptimizer loads torch Adam's `step` from a reshardable checkpoint | always |
| wgrad | megatron-core's `gradient_accumulation_fusion` GEMM without apex (kernels/wgrad.py) | CUDA |

Each patch of megatron-core states the versions it was written and tested against; with another
version installed `apply()` raises `UnsupportedVersionError` naming it, instead of patching code that
may have changed underneath (constraints.txt pins the tested one).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import torch
from packaging.specifiers import SpecifierSet

from megatron_infi.errors import RunError

# The megatron-core releases whose private code our patches were read against and tested with.
MEGATRON_CORE_TESTED = SpecifierSet(">=0.19.0,<0.20")


class UnsupportedVersionError(RunError):
    pass


@dataclass(frozen=True)
class Patch:
    name: str
    where: str  # the code it changes, for the error message
    needed: Callable[[], bool]
    install: Callable[[], object]


def _no_cuda() -> bool:
    return not torch.cuda.is_available()


def _install_cpu_adapter() -> None:
    from megatron_infi.training import cpu_adapter

    cpu_adapter.apply()


def _skip_missing_step(orig):
    """Loading a 'fully_reshardable' distributed-optimizer checkpoint copies every tensor in the
    parameter's live state from the checkpoint, but torch Adam's `step` is not among the saved
    per-parameter tensors (it is restored from the param groups), so the load raises KeyError 'step'.
    Hide `step` from the copy and put it back. (megatron-core 0.19 bug on the torch-optimizer path,
    no TE / apex: our default on CPU and on GPUs without those packages.)"""

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

    wrapper.infi_patched = True
    return wrapper


def _install_distopt_step() -> None:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    method = DistributedOptimizer._set_main_param_and_optimizer_states
    if not getattr(method, "infi_patched", False):
        DistributedOptimizer._set_main_param_and_optimizer_states = _skip_missing_step(method)


def _install_wgrad() -> None:
    from megatron_infi.kernels import wgrad

    wgrad.install()


PATCHES = (
    Patch(
        "cpu",
        "megatron.core.tensor_parallel.random (RNG tracker), torch.cuda",
        _no_cuda,
        _install_cpu_adapter,
    ),
    Patch(
        "distopt-step",
        "megatron.core.optimizer.distrib_optimizer.DistributedOptimizer._set_main_param_and_optimizer_states",
        lambda: True,
        _install_distopt_step,
    ),
    Patch(
        "wgrad",
        "megatron.core.tensor_parallel.layers.fused_weight_gradient_mlp_cuda",
        torch.cuda.is_available,
        _install_wgrad,
    ),
)

_applied: list[str] | None = None


def megatron_core_version() -> str:
    return version("megatron-core")


def check_version(patch: Patch, installed: str | None = None) -> None:
    installed = installed or megatron_core_version()
    if installed not in MEGATRON_CORE_TESTED:
        raise UnsupportedVersionError(
            f"megatron-core {installed} is installed, but patch {patch.name!r} ({patch.where}) is tested "
            f"with megatron-core {MEGATRON_CORE_TESTED} only: install a tested version (constraints.txt), "
            "or re-check the patch against this version and widen MEGATRON_CORE_TESTED in "
            "megatron_infi/training/patches.py"
        )


def apply() -> list[str]:
    """Apply every patch this machine needs, once per process; returns their names."""
    global _applied
    if _applied is None:
        names = []
        for patch in PATCHES:
            if patch.needed():
                check_version(patch)
                patch.install()
                names.append(patch.name)
        _applied = names
    return list(_applied)


def require_applied() -> None:
    if _applied is None:
        raise RuntimeError(
            "megatron-core is started before megatron_infi.training.patches.apply(): call it first in "
            "the entry point (it installs the CPU adapter and the megatron-core fixes)"
        )
