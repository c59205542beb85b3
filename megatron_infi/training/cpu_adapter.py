"""Run megatron-core on a machine without CUDA (tests, CI, laptops, `make demo`).

megatron-core assumes CUDA in a handful of places: the CUDA RNG tracker behind
`model_parallel_cuda_manual_seed`; `torch.cuda.current_device()` as an allocation device (rotary
embeddings, DDP grad buffers, the global memory buffer, p2p, the checkpoint saver); literal
`device='cuda'` in the optimizer, clip_grads and schedules; `Tensor.type() == 'torch.cuda.FloatTensor'`
asserts in clip_grads and the distributed optimizer; `torch.cuda.synchronize` and streams/events.

`apply()` redirects exactly those to the CPU. It does nothing when CUDA is available, so the GPU
path is megatron-core untouched: the same training code runs on both.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.utils._device import _device_constructors

_APPLIED = False

# Factories megatron-core calls with a literal device='cuda' / current_device().
_FACTORIES = (
    "zeros",
    "ones",
    "empty",
    "full",
    "tensor",
    "arange",
    "randn",
    "rand",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
)


def _to_cpu_device(device):
    if device is None:
        return None
    if isinstance(device, int):
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        return torch.device("cpu")
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


def _redirect_device(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _to_cpu_device(kwargs["device"])
        return fn(*args, **kwargs)

    return wrapper


class _NullStream:
    """Stands in for torch.cuda.Stream / Event: CPU work is already ordered."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        pass

    def wait_event(self, *args, **kwargs):
        pass

    def record_event(self, event=None):
        return event or _NullStream()

    def record(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0

    @staticmethod
    def priority_range():
        return (0, 0)


def _tensor_type(orig):
    @functools.wraps(orig)
    def type_(self, *args, **kwargs):
        # megatron-core asserts `t.type() == 'torch.cuda.FloatTensor'` for fp32 params/grads; report the
        # CUDA-equivalent name for CPU tensors. Conversions (`t.type(dtype)`) are untouched.
        name = orig(self, *args, **kwargs)
        if not args and not kwargs and self.device.type == "cpu" and isinstance(name, str):
            return name.replace("torch.", "torch.cuda.", 1)
        return name

    return type_


def _patch_rng() -> None:
    """The model-parallel RNG tracker forks CUDA generator states; on CPU it forks the CPU one."""
    from megatron.core.tensor_parallel import random as mp_random

    mp_random._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    mp_random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(
        new_state
    )
    # torch.manual_seed itself calls torch.cuda.manual_seed_all: seed the CPU generator directly.
    torch.cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    torch.cuda.manual_seed_all = lambda seed: None
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)


def apply() -> bool:
    """Install the CPU redirections once per process; returns whether they are active."""
    global _APPLIED
    if torch.cuda.is_available():
        return False
    if _APPLIED:
        return True
    cpu = torch.device("cpu")
    torch.cuda.current_device = lambda: cpu
    torch.cuda.set_device = lambda device: None
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.current_stream = lambda device=None: _NullStream()
    torch.cuda.default_stream = lambda device=None: _NullStream()
    torch.cuda.Stream = _NullStream
    torch.cuda.Event = _NullStream
    torch.cuda.stream = lambda stream=None: contextlib.nullcontext()
    torch.cuda.empty_cache = lambda: None
    # `with torch.device("meta")` recognises factories by identity, in a set cached on first use:
    # cache it now, with the originals, or the context stops applying to the wrapped ones (and
    # transformers' meta-device loading leaves RoPE buffers uninitialised).
    _device_constructors()
    for name in _FACTORIES:
        setattr(torch, name, _redirect_device(getattr(torch, name)))
    torch.Tensor.cuda = lambda self, device=None, non_blocking=False, **kwargs: self
    torch.Tensor.type = _tensor_type(torch.Tensor.type)
    _patch_rng()
    _APPLIED = True
    return True


def is_applied() -> bool:
    return _APPLIED
