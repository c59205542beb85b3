"""Every Triton kernel compiles for the H100 (sm_90) with the argument types and block sizes it is
launched with at Llama-3.2-1B shapes in bf16, and fits the SM's shared memory: checked here, without
a GPU, so a kernel that only the interpreter accepts fails in CI rather than on the device."""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from megatron_infi.kernels import cross_entropy, rmsnorm, rope, swiglu  # noqa: E402
from megatron_infi.kernels._triton import next_power_of_2, warps_for  # noqa: E402

H100 = GPUTarget("cuda", 90, 32)
H100_SHARED_BYTES = 227 * 1024

BF16_PTR, F32_PTR, I64_PTR = "*bf16", "*fp32", "*i64"
CASES = {
    "rmsnorm_fwd": (
        rmsnorm._rmsnorm_fwd_kernel,
        dict(
            X=BF16_PTR,
            W=BF16_PTR,
            Y=BF16_PTR,
            RSTD=F32_PTR,
            stride_x="i32",
            stride_y="i32",
            n_cols="i32",
            eps="fp32",
        ),
        dict(BLOCK=next_power_of_2(2048)),
        warps_for(2048),
    ),
    "rmsnorm_bwd": (
        rmsnorm._rmsnorm_bwd_kernel,
        dict(
            DY=BF16_PTR,
            X=BF16_PTR,
            W=BF16_PTR,
            RSTD=F32_PTR,
            DX=BF16_PTR,
            DW_PARTIAL=F32_PTR,
            stride_dy="i32",
            stride_x="i32",
            stride_dx="i32",
            n_rows="i32",
            n_cols="i32",
            rows_per_program="i32",
        ),
        dict(BLOCK=next_power_of_2(2048)),
        warps_for(2048),
    ),
    "swiglu_fwd": (
        swiglu._swiglu_fwd_kernel,
        dict(X=BF16_PTR, Y=BF16_PTR, stride_x="i32", stride_y="i32", n_cols="i32"),
        dict(BLOCK=swiglu.BLOCK),
        4,
    ),
    "swiglu_bwd": (
        swiglu._swiglu_bwd_kernel,
        dict(
            X=BF16_PTR,
            DY=BF16_PTR,
            DX=BF16_PTR,
            stride_x="i32",
            stride_dy="i32",
            stride_dx="i32",
            n_cols="i32",
        ),
        dict(BLOCK=swiglu.BLOCK),
        4,
    ),
    "rope": (
        rope._rope_kernel,
        {
            **dict(Q_IN=BF16_PTR, Q_OUT=BF16_PTR, K_IN=BF16_PTR, K_OUT=BF16_PTR, ANGLES=F32_PTR),
            **{f"s{t}_{io}_{d}": "i32" for t in "qk" for io in ("in", "out") for d in "sbh"},
            **dict(stride_angles="i32", batch="i32", n_q_heads="i32", n_k_heads="i32", sin_sign="fp32"),
        },
        dict(HALF=32, BLOCK_D=32, BLOCK_QH=32, BLOCK_KH=8),
        4,
    ),
    "ce_stats": (
        cross_entropy._ce_stats_kernel,
        dict(LOGITS=BF16_PTR, LABELS=I64_PTR, M=F32_PTR, S=F32_PTR, T=F32_PTR, stride_l="i32", n_cols="i32"),
        dict(BLOCK=cross_entropy.BLOCK_V),
        8,
    ),
    "ce_grad": (
        cross_entropy._ce_grad_kernel,
        dict(LOGITS=BF16_PTR, LABELS=I64_PTR, LSE=F32_PTR, stride_l="i32", n_cols="i32"),
        dict(BLOCK=cross_entropy.BLOCK_V),
        8,
    ),
}


def compile_for_h100(name: str):
    kernel, signature, constexprs, num_warps = CASES[name]
    params = kernel.compiled.arg_names
    assert sorted(params) == sorted([*signature, *constexprs]), "test signature out of date"
    source = ASTSource(
        fn=kernel.compiled,
        signature={p: signature.get(p, "constexpr") for p in params},
        constexprs=constexprs,
    )
    return triton.compile(source, target=H100, options={"num_warps": num_warps})


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiles_for_h100(name):
    compiled = compile_for_h100(name)
    assert compiled.asm["cubin"], "no cubin produced"
    assert compiled.metadata.shared <= H100_SHARED_BYTES
