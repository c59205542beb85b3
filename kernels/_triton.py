"""Launch Triton kernels on the device their tensors live on.

A kernel defined with `@device_kernel` compiles with Triton's JIT for CUDA tensors and runs in
Triton's interpreter for CPU tensors. The interpreter is how the kernels are tested on machines
without a GPU; choosing it per launch (instead of by `TRITON_INTERPRET=1` at import time) keeps
the result independent of which module happened to import the kernels first.

Triton's own library functions (`tl.sum`, `tl.max`, `tl.sigmoid`, ...) are `@triton.jit` functions
whose interpreted form is fixed when Triton is imported; during an interpreted launch, device-side
calls to any JIT function are routed to its interpreted twin (`_interpreted_device_calls`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import threading

import torch


@functools.cache
def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_usable_on(device: torch.device) -> bool:
    """Compiled Triton on CUDA; on CPU only the (slow) interpreter, which tests use explicitly."""
    return triton_importable() and device.type == "cuda"


_interp_lock = threading.Lock()


@contextlib.contextmanager
def _interpreted_device_calls():
    from triton.runtime.interpreter import InterpretedFunction, _patch_lang
    from triton.runtime.jit import JITFunction

    twins: dict = {}

    def call(self, *args, **kwargs):
        # keyed by identity: hashing a JITFunction parses its source, which fails mid-interpretation
        twin = twins.get(id(self))
        if twin is None:
            twin = twins[id(self)] = InterpretedFunction(self.fn)
        # InterpretedFunction.__call__ (triton 3.7) patches triton.language for the interpreter and
        # never restores it, so a later real compile in this process would trace with the
        # interpreter's builder: do its work here with the patch scope undone afterwards.
        scope = _patch_lang(twin.fn)
        try:
            return twin.rewrite()(*args, **kwargs)
        finally:
            scope.restore()

    with _interp_lock:
        original = JITFunction.__call__
        JITFunction.__call__ = call
        try:
            yield
        finally:
            JITFunction.__call__ = original


class DeviceKernel:
    """`kernel[grid](*args, **meta)`: JIT on CUDA, interpreter on CPU."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    @functools.cached_property
    def compiled(self):
        import triton

        return triton.jit(self.fn)

    @functools.cached_property
    def interpreted(self):
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(self.fn)

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            device = next(a.device for a in args if isinstance(a, torch.Tensor))
            if device.type == "cuda":
                return self.compiled[grid](*args, **kwargs)
            with _interpreted_device_calls():
                return self.interpreted[grid](*args, **kwargs)

        return launch


def device_kernel(fn) -> DeviceKernel:
    return DeviceKernel(fn)


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def sm_resources(device: torch.device) -> tuple[int, int]:
    """(multiprocessors, resident threads per multiprocessor) of a CUDA device; for the interpreter,
    which runs programs one after another, a small stand-in."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return props.multi_processor_count, props.max_threads_per_multi_processor
    return 4, 256


# Share of an SM's thread slots row-loop kernels aim to fill: enough loads in flight to saturate
# memory bandwidth, while each program's fp32 partial result (written once, reduced after) stays a
# few % of the kernel's traffic. Register use keeps more from being resident anyway.
ROW_LOOP_OCCUPANCY = 0.5


def row_loop_grid(n_rows: int, num_warps: int, device: torch.device) -> tuple[int, int]:
    """(programs, rows per program) for a kernel whose programs each loop over a contiguous block of
    rows and write one partial result: several programs per SM (ROW_LOOP_OCCUPANCY), none idle."""
    if n_rows == 0:
        return 1, 0
    sms, threads_per_sm = sm_resources(device)
    per_sm = max(1, int(threads_per_sm * ROW_LOOP_OCCUPANCY) // (32 * num_warps))
    rows_per_program = -(-n_rows // min(n_rows, sms * per_sm))
    return -(-n_rows // rows_per_program), rows_per_program


def warps_for(block: int) -> int:
    """Warps per program for a row of `block` elements (the usual Triton / Liger heuristic)."""
    if block >= 32768:
        return 32
    if block >= 8192:
        return 16
    if block >= 2048:
        return 8
    return 4
