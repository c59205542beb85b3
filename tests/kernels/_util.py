"""Error bounds shared by the kernel tests.

Every kernel computes in fp32 and rounds its outputs once, so against an fp32 reference evaluated
on the same (already rounded) inputs the error is a few output ulps: bounds are stated relative to
the largest reference magnitude, per dtype. The fused cross-entropy also rounds the logits GEMM to
the input dtype (as the unfused path does), hence its looser bf16 bound.
"""

from __future__ import annotations

import torch

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
CE_TOL = {torch.float32: 1e-5, torch.bfloat16: 3e-2}
DTYPES = [torch.float32, torch.bfloat16]


def device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str = "") -> None:
    """max |actual - expected| <= tol * max |expected| (elementwise, in fp32)."""
    actual, expected = actual.float(), expected.float()
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = expected.abs().max().clamp(min=1e-6)
    err = (actual - expected).abs().max()
    assert err <= tol * scale, f"{what}: max error {err.item():.3g} > {tol} x {scale.item():.3g}"
