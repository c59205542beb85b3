"""Running a kernel in Triton's interpreter (as the CPU tests do) leaves triton.language as it found
it, so a real compile later in the same process still works: in the full suite the sm_90 compile
tests run after interpreted launches (triton 3.7's interpreter leaks its patches from device-side
calls such as tl.max / tl.sum unless we undo them)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from megatron_infi.kernels.cross_entropy import linear_cross_entropy  # noqa: E402
from tests.kernels.test_compile_sm90 import compile_for_h100  # noqa: E402


def _language_state() -> dict:
    return {
        (id(obj), name): id(value)
        for obj in (tl, tl.core, tl.math, tl.core.tensor)
        for name, value in vars(obj).items()
        if not name.startswith("__")
    }


def test_interpreted_launch_leaves_the_compiler_usable():
    before = _language_state()
    hidden, weight, labels = torch.randn(4, 8), torch.randn(40, 8), torch.tensor([1, 5, 0, 39])
    loss = linear_cross_entropy(hidden, weight, labels, impl="triton")
    expected = torch.nn.functional.cross_entropy(hidden @ weight.t(), labels, reduction="none")
    torch.testing.assert_close(loss, expected)
    after = _language_state()  # (lazily imported submodules may appear; nothing may change)
    assert {key: after.get(key) for key in before} == before
    assert compile_for_h100("ce_stats").asm["cubin"]
