"""Per-kernel forward + backward time at Llama-3.2-1B training shapes (micro-batch 2 x seq 4096, bf16)
against torch eager, torch.compile and Liger, with achieved GB/s next to the measured copy bandwidth
(memory-bound ops) or TFLOP/s (the output layer + loss, attention), and peak extra memory.

    python benchmarks/kernels_ops.py --out results.jsonl [--ops rmsnorm,swiglu,rope,ce,attention]

One JSON line per (op, implementation) is appended to --out as soon as it is measured, so a run cut
short still leaves everything it measured. Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_infi.kernels.cross_entropy import linear_cross_entropy  # noqa: E402
from megatron_infi.kernels.rmsnorm import rmsnorm_triton  # noqa: E402
from megatron_infi.kernels.rope import llama3_inv_freq, rope_angles, rope_triton  # noqa: E402
from megatron_infi.kernels.swiglu import swiglu_torch, swiglu_triton  # noqa: E402

# Llama-3.2-1B, micro-batch 2, sequence 4096
B, S, HIDDEN, FFN, HEADS, GROUPS, HEAD_DIM, VOCAB = 2, 4096, 2048, 8192, 32, 8, 64, 128256
N = B * S
DT = torch.bfloat16
DEV = "cuda"
EPS = 1e-5


def smoke_shapes() -> None:
    """Tiny shapes on CPU (kernels in Triton's interpreter): a check of this script, not a benchmark."""
    global B, S, HIDDEN, FFN, HEADS, GROUPS, HEAD_DIM, VOCAB, N, DT, DEV
    B, S, HIDDEN, FFN, HEADS, GROUPS, HEAD_DIM, VOCAB = 2, 16, 64, 96, 4, 2, 16, 300
    N, DT, DEV = B * S, torch.float32, "cpu"


def _sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def timed(fn, inputs, grads, iters=10, warmup=3) -> tuple[float, float]:
    """(ms per forward + backward, peak extra MiB during one step)."""

    def step():
        for t in inputs:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.grad = None
        out = fn(*inputs)
        out = out if isinstance(out, tuple) else (out,)
        torch.autograd.backward(out, grads)

    for _ in range(warmup):
        step()
    if DEV != "cuda":
        start = time.perf_counter()
        for _ in range(iters):
            step()
        return (time.perf_counter() - start) * 1e3 / iters, 0.0
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters, peak


def copy_bandwidth_gbs() -> float:
    if DEV != "cuda":
        x = torch.empty(2**20, dtype=DT)
        start = time.perf_counter()
        torch.empty_like(x).copy_(x)
        return 2 * x.numel() * x.element_size() / (time.perf_counter() - start) / 1e9
    x = torch.empty(2**28, dtype=DT, device=DEV)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize()
    return 2 * x.numel() * x.element_size() * 20 / (start.elapsed_time(end) / 1e3) / 1e9


def _leaf(*shape, scale=1.0):
    return (torch.randn(*shape, device=DEV) * scale).to(DT).requires_grad_()


# --- the ops: inputs, upstream grads, minimal bytes / flops, implementations -------------------


def op_rmsnorm():
    x, w = _leaf(N, HIDDEN), (1 + 0.1 * torch.randn(HIDDEN, device=DEV)).to(DT).requires_grad_()
    dy = torch.randn(N, HIDDEN, device=DEV).to(DT)

    def eager(x, w):
        return F.rms_norm(x, (HIDDEN,), w, EPS)

    def hf_eager(x, w):  # transformers' LlamaRMSNorm
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype)

    impls = {"triton": lambda x, w: rmsnorm_triton(x, w, EPS), "eager": eager, "eager_hf": hf_eager}

    def liger():
        from liger_kernel.transformers.rms_norm import LigerRMSNorm

        norm = LigerRMSNorm(HIDDEN, eps=EPS).to(DEV).to(DT)
        return lambda x, w: torch.func.functional_call(norm, {"weight": w}, (x,))

    return dict(
        inputs=(x, w), grads=(dy,), bytes=5 * N * HIDDEN * 2, impls=impls, liger=liger, compile_fn=hf_eager
    )


def op_swiglu():
    x = _leaf(N, 2 * FFN)
    dy = torch.randn(N, FFN, device=DEV).to(DT)
    impls = {"triton": swiglu_triton, "eager": swiglu_torch}

    def liger():
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction

        # Liger takes gate and up as two contiguous tensors (HF has two projections).
        return LigerSiLUMulFunction.apply, (_leaf(N, FFN), _leaf(N, FFN)), (dy,)

    return dict(
        inputs=(x,), grads=(dy,), bytes=8 * N * FFN * 2, impls=impls, liger=liger, compile_fn=swiglu_torch
    )


def op_rope():
    from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd

    q, k = _leaf(S, B, HEADS, HEAD_DIM), _leaf(S, B, GROUPS, HEAD_DIM)
    dq, dk = torch.randn_like(q), torch.randn_like(k)
    angles = rope_angles(llama3_inv_freq(HEAD_DIM, 500000.0).to(DEV), S)

    def eager(q, k):  # megatron-core's unfused rotation
        return _apply_rotary_pos_emb_bshd(q, angles), _apply_rotary_pos_emb_bshd(k, angles)

    impls = {
        # views: the leaf inputs cannot be rotated in place, as megatron's q (a fresh copy) is.
        "triton": lambda q, k: rope_triton(q.view_as(q), k.view_as(k), angles),
        "eager": eager,
    }

    def liger():
        from liger_kernel.transformers.rope import liger_rotary_pos_emb

        cos = torch.cos(angles[:, 0, 0, :])[None].to(DT)  # HF layout: [1, s, d]
        sin = torch.sin(angles[:, 0, 0, :])[None].to(DT)

        # HF's layout: [b, s, heads, d] projections viewed as [b, heads, s, d].
        q_hf, k_hf = _leaf(B, S, HEADS, HEAD_DIM), _leaf(B, S, GROUPS, HEAD_DIM)
        grads = (
            torch.randn(B, HEADS, S, HEAD_DIM, device=DEV).to(DT),
            torch.randn(B, GROUPS, S, HEAD_DIM, device=DEV).to(DT),
        )
        return (
            lambda q, k: liger_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin),
            (q_hf, k_hf),
            grads,
        )

    bytes_ = 4 * (q.numel() + k.numel()) * 2
    return dict(inputs=(q, k), grads=(dq, dk), bytes=bytes_, impls=impls, liger=liger, compile_fn=eager)


def op_ce():
    h = _leaf(N, HIDDEN)
    w = _leaf(VOCAB, HIDDEN, scale=0.02)
    labels = torch.randint(0, VOCAB, (N,), device=DEV)
    one = torch.ones((), device=DEV)

    def eager(h, w):  # the unfused output layer + loss (HF / megatron without fusion)
        return F.cross_entropy((h @ w.t()).float(), labels)

    impls = {"triton": lambda h, w: linear_cross_entropy(h, w, labels).mean(), "eager": eager}

    def liger():
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        loss = LigerFusedLinearCrossEntropyLoss()
        return lambda h, w: loss(w, h, labels)

    return dict(
        inputs=(h, w), grads=(one,), flops=6 * N * HIDDEN * VOCAB, impls=impls, liger=liger, compile_fn=eager
    )


def op_attention():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = _leaf(B, HEADS, S, HEAD_DIM), _leaf(B, GROUPS, S, HEAD_DIM), _leaf(B, GROUPS, S, HEAD_DIM)
    dy = torch.randn_like(q)
    rep = HEADS // GROUPS

    def gqa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def expanded(backend):
        def run(q, k, v):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(
                    q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=True
                )

        return run

    def forced_gqa(backend):
        def run(q, k, v):
            with sdpa_kernel([backend]):
                return gqa(q, k, v)

        return run

    impls = {
        "sdpa_gqa_auto": gqa,
        "sdpa_gqa_flash": forced_gqa(SDPBackend.FLASH_ATTENTION),
        "sdpa_gqa_cudnn": forced_gqa(SDPBackend.CUDNN_ATTENTION),
        "sdpa_expanded_cudnn": expanded(SDPBackend.CUDNN_ATTENTION),
        "sdpa_expanded_flash": expanded(SDPBackend.FLASH_ATTENTION),
    }
    try:
        from flash_attn import flash_attn_func

        impls["flash_attn"] = lambda q, k, v: flash_attn_func(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True
        ).transpose(1, 2)
    except ImportError:
        pass
    # MFU convention: 12 * s^2 * heads * head_dim per sequence for forward + backward (non-causal).
    return dict(inputs=(q, k, v), grads=(dy,), flops=12 * B * S * S * HEADS * HEAD_DIM, impls=impls)


OPS = {"rmsnorm": op_rmsnorm, "swiglu": op_swiglu, "rope": op_rope, "ce": op_ce, "attention": op_attention}


def run(ops: list[str], out: Path, iters: int, with_compile: bool) -> None:
    bandwidth = copy_bandwidth_gbs()
    emit(out, {"op": "copy", "impl": "torch", "gbs": round(bandwidth, 1)})
    print(f"copy bandwidth {bandwidth:.0f} GB/s", flush=True)
    for name in ops:
        spec = OPS[name]()
        impls = dict(spec["impls"])
        if "liger" in spec:
            try:
                impls["liger"] = spec["liger"]()
            except Exception as err:  # the wheel may be missing: say so, keep going
                emit(out, {"op": name, "impl": "liger", "error": f"{type(err).__name__}: {err}"})
        if with_compile and "compile_fn" in spec:
            impls["compile"] = torch.compile(spec["compile_fn"], dynamic=False)
        for impl, fn in impls.items():
            record = {"op": name, "impl": impl}
            # an implementation may bring its own inputs (its natural layout)
            fn, inputs, grads = fn if isinstance(fn, tuple) else (fn, spec["inputs"], spec["grads"])
            t0 = time.time()
            try:
                ms, peak = timed(fn, inputs, grads, iters=iters)
                record.update(ms=round(ms, 4), peak_mib=round(peak, 1))
                if "bytes" in spec:
                    gbs = spec["bytes"] / (ms / 1e3) / 1e9
                    record.update(gbs=round(gbs, 1), of_copy=round(gbs / bandwidth, 3))
                if "flops" in spec:
                    record.update(tflops=round(spec["flops"] / (ms / 1e3) / 1e12, 1))
            except Exception as err:
                record["error"] = f"{type(err).__name__}: {err}"
                traceback.print_exc()
            record["wall_s"] = round(time.time() - t0, 1)
            emit(out, record)
            print(json.dumps(record), flush=True)
        del spec, impls
        torch.cuda.empty_cache()


def emit(out: Path, record: dict) -> None:
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: checks this script")
    args = parser.parse_args(argv)
    if args.smoke:
        smoke_shapes()
    elif not torch.cuda.is_available():
        print("kernels_ops: needs a CUDA device", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run(args.ops.split(","), args.out, args.iters, not args.no_compile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
