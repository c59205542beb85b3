"""Check the Triton kernels on this machine against their fp32 definitions, forward and backward:
compiled on a GPU, in Triton's interpreter on CPU (small shapes). An install check for GPU nodes and
the kernels step of `make demo`.

    python -m megatron_infi.kernels.selfcheck [--out DIR]      # writes DIR/kernels_selfcheck.json

`run_selfcheck(out_dir)` returns {op: {"max_rel_error": ..., "bound": ..., "ok": ...}} and exits
non-zero from `main` when any op is off its bound.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from megatron_infi.kernels.cross_entropy import cross_entropy_reference, linear_cross_entropy
from megatron_infi.kernels.rmsnorm import rmsnorm_reference, rmsnorm_triton
from megatron_infi.kernels.rope import llama3_inv_freq, rope_angles, rope_reference, rope_triton
from megatron_infi.kernels.swiglu import swiglu_reference, swiglu_triton

BOUND = {torch.float32: 1e-5, torch.bfloat16: 3e-2}


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.float().abs().max().clamp(min=1e-6)
    return ((actual.float() - expected.float()).abs().max() / scale).item()


def _grads(fn, inputs: list[torch.Tensor], upstream: list[torch.Tensor]) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out = out if isinstance(out, tuple) else (out,)
    torch.autograd.backward(out, upstream)
    return [o.detach() for o in out] + [t.grad for t in leaves]


def _cases(dev: torch.device, dtype: torch.dtype, small: bool):
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dev, dtype)

    n, h, f, v = (24, 64, 96, 500) if small else (4096, 2048, 8192, 32000)
    s, b, hq, hk, d = (8, 2, 4, 2, 32) if small else (2048, 2, 32, 8, 64)
    eps = 1e-5
    angles = rope_angles(llama3_inv_freq(d, 500000.0), s).to(dev)
    labels = torch.randint(0, v, (n,), generator=gen).to(dev)
    x, w = rand(n, h), (1 + 0.1 * torch.randn(h, generator=gen)).to(dev, dtype)

    def rope(q, k):
        return rope_triton(q.view_as(q), k.view_as(k), angles)

    def rope_ref(q, k):
        return rope_reference(q, angles), rope_reference(k, angles)

    return {
        "rmsnorm": (
            lambda x, w: rmsnorm_triton(x, w, eps),
            lambda x, w: rmsnorm_reference(x, w, eps),
            [x, w],
            [rand(n, h)],
        ),
        "swiglu": (swiglu_triton, swiglu_reference, [rand(n, 2 * f)], [rand(n, f)]),
        "rope": (
            rope,
            rope_ref,
            [rand(s, b, hq, d), rand(s, b, hk, d)],
            [rand(s, b, hq, d), rand(s, b, hk, d)],
        ),
        "linear_cross_entropy": (
            lambda x, w: linear_cross_entropy(x, w, labels),
            lambda x, w: cross_entropy_reference(x, w, labels),
            [x, rand(v, h, scale=h**-0.5)],
            [torch.full((n,), 1.0 / n, device=dev)],
        ),
    }


def run_selfcheck(out_dir: str | Path | None = None) -> dict:
    on_gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if on_gpu else "cpu")
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        for name, (fn, ref, inputs, upstream) in _cases(dev, dtype, small=not on_gpu).items():
            start = time.perf_counter()
            got = _grads(fn, inputs, upstream)
            want = _grads(ref, [t.float() for t in inputs], [u.float() for u in upstream])
            error = max(_rel(a, b) for a, b in zip(got, want, strict=True))
            results[f"{name}/{str(dtype).removeprefix('torch.')}"] = {
                "max_rel_error": error,
                "bound": BOUND[dtype],
                "ok": error <= BOUND[dtype],
                "seconds": round(time.perf_counter() - start, 3),
            }
    report = {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu (Triton interpreter)",
        "ops": results,
    }
    if out_dir is not None:
        from megatron_infi.utils import atomic_write_json

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out_dir) / "kernels_selfcheck.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the Triton kernels against their definitions.")
    parser.add_argument("--out", default=None, help="directory for kernels_selfcheck.json")
    args = parser.parse_args(argv)
    report = run_selfcheck(args.out)
    print(f"device: {report['device']}")
    for name, r in report["ops"].items():
        status = "ok" if r["ok"] else "FAIL"
        print(f"{name:28s} max rel error {r['max_rel_error']:.2e} (bound {r['bound']:.0e})  {status}")
    return 0 if all(r["ok"] for r in report["ops"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
