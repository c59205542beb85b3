"""The kernels=triton vs kernels=torch loss-curve parity of the `llama3.2-1b` model, and whole-model
throughput for ablations that need code-level switches (AdamW kernel, the wgrad fusion);
the headline comparison against HF + Liger goes through the Foundation's
benchmarks/train_throughput.py (benchmarks/gpu_kernels.sh runs both).

    python benchmarks/kernels_model.py parity --steps 20 --out r.jsonl
    python benchmarks/kernels_model.py throughput --system mcore --kernels triton --out r.jsonl
    python benchmarks/kernels_model.py throughput --system hf --liger --out r.jsonl

A step is `--accum` micro-batches of `--mb` x `--seq` tokens followed by the optimizer step, built
from the trainer's pieces (megatron_infi/training): bf16 weights with fp32 main params and fp32 grad
buffers, megatron-core DDP and optimizer (optimizer.impl=auto, torch's fused AdamW on GPU, as in the
trainer; --no-fused-adam: optimizer.impl=torch), the 1F1B schedule's forward/backward. HF runs in pure bf16 (bf16 weights, torch's fused AdamW) by default.
Tokens are real text: the UTF-8 bytes of CPython's standard library sources (ids 0-255).
MFU = tokens/s x FLOPs/token (6 x matmul params incl. LM head + 12 x layers x hidden x seq) / 989 TF/s.
`--preset tiny` runs on CPU: a smoke test of this script.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import sysconfig
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import megatron_infi.models  # noqa: E402, F401  (registers the architectures and their presets)
from megatron_infi.config.core import from_dict  # noqa: E402
from megatron_infi.config.schema import TrainConfig  # noqa: E402
from megatron_infi.training.metrics import flops_per_token  # noqa: E402

PEAK_FLOPS = 989e12  # H100 SXM dense bf16


def _cuda() -> bool:
    return torch.cuda.is_available()


def _sync() -> None:
    if _cuda():
        torch.cuda.synchronize()


def stdlib_tokens(count: int) -> torch.Tensor:
    """`count` byte tokens of real text: CPython's standard library sources, in a fixed order."""
    out, have = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        data = path.read_bytes()
        out.append(data)
        have += len(data)
        if have >= count:
            break
    tokens = torch.frombuffer(bytearray(b"".join(out)[:count]), dtype=torch.uint8).long()
    if tokens.numel() < count:
        tokens = tokens.repeat(-(-count // tokens.numel()))[:count]
    return tokens


def batches(seq: int, mb: int, count: int):
    """`count` micro-batches of `mb` windows of seq + 1 tokens, as the trainer's batch dicts."""
    tokens = stdlib_tokens(count * mb * (seq + 1)).view(count, mb, seq + 1)
    for window in tokens:
        yield {
            "tokens": window[:, :-1].contiguous(),
            "labels": window[:, 1:].contiguous(),
            "position_ids": torch.arange(seq).expand(mb, seq).contiguous(),
            "loss_mask": torch.ones(mb, seq),
        }


def train_config(
    kernels: str,
    seq: int,
    mb: int,
    accum: int,
    recompute: str,
    attention: str,
    preset: str = "llama3.2-1b",
    optimizer_impl: str = "auto",
) -> TrainConfig:
    data = {
        "model": {"preset": preset, "kernels": kernels, "recompute": recompute, "attention": attention},
        "optimizer": {"impl": optimizer_impl},
        "data": {"seq_length": seq},
        # bf16 with fp32 main params on GPU; fp32 on CPU (the smoke test of this script)
        "train": {"micro_batch_size": mb, "global_batch_size": mb * accum, "precision": "auto"},
    }
    return from_dict(TrainConfig, TrainConfig.preprocess(data))


class McoreRun:
    """The trainer's model, DDP, optimizer and schedule on one GPU."""

    def __init__(self, cfg: TrainConfig, seed: int = 1234, weights: dict | None = None):
        from megatron.core.distributed import (
            DistributedDataParallel,
            DistributedDataParallelConfig,
            finalize_model_grads,
        )

        from megatron_infi.models.gpt import build_model, resolve_dtype
        from megatron_infi.models.spec import check_supported
        from megatron_infi.training import patches
        from megatron_infi.training.distributed import init_model_parallel
        from megatron_infi.training.optim import apply_adam_impl, build_optimizer, resolve_adam_impl

        check_supported(cfg.model, cfg.parallel)
        patches.apply()
        cfg.optimizer.impl = resolve_adam_impl(cfg.optimizer.impl, "cuda" if _cuda() else "cpu")
        init_model_parallel(1, 1, seed=seed)
        (chunk,), tconfig = build_model(cfg)
        if weights is not None:
            chunk.load_state_dict(weights)
        tconfig.calculate_per_token_loss = True
        self.wgrad_fusion = tconfig.gradient_accumulation_fusion
        self.ddp = DistributedDataParallel(
            config=tconfig,
            ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True),
            module=chunk,
        )
        self.optimizer = build_optimizer(cfg, [self.ddp], resolve_dtype(cfg.train.precision))
        apply_adam_impl(self.optimizer, cfg.optimizer.impl)  # as the trainer does
        tconfig.grad_scale_func = self.optimizer.scale_loss
        tconfig.finalize_model_grads_func = finalize_model_grads
        self.cfg = cfg

    def state_dict(self) -> dict:
        return {
            k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v
            for k, v in self.ddp.module.state_dict().items()
        }

    def step(self, micro_batches: list[dict]) -> float:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        from megatron_infi.training.trainer import _forward_step

        self.ddp.zero_grad_buffer()
        self.optimizer.zero_grad()
        out = get_forward_backward_func()(
            forward_step_func=_forward_step,
            data_iterator=iter(micro_batches),
            model=[self.ddp],
            num_microbatches=len(micro_batches),
            seq_length=self.cfg.data.seq_length,
            micro_batch_size=self.cfg.train.micro_batch_size,
            forward_only=False,
        )
        _, self.grad_norm, _ = self.optimizer.step()
        total = sum(item["lm loss"] for item in out)
        return (total[0] / total[1]).item()


class HFRun:
    """transformers' LlamaForCausalLM (Llama-3.2-1B shape, random init), optionally with Liger."""

    def __init__(self, model, liger: bool, precision: str = "bf16", seed: int = 1234):
        from transformers import LlamaConfig, LlamaForCausalLM

        if liger:
            from liger_kernel.transformers import apply_liger_kernel_to_llama

            apply_liger_kernel_to_llama(
                rope=True, swiglu=True, rms_norm=True, cross_entropy=False, fused_linear_cross_entropy=True
            )
        config = LlamaConfig(
            vocab_size=model.vocab_size,
            hidden_size=model.hidden_size,
            intermediate_size=model.ffn_hidden_size,
            num_hidden_layers=model.num_layers,
            num_attention_heads=model.num_attention_heads,
            num_key_value_heads=model.num_query_groups,
            max_position_embeddings=model.max_position_embeddings,
            rms_norm_eps=model.norm_eps,
            tie_word_embeddings=model.tie_embeddings,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": model.rope_theta,
                "factor": model.rope_scaling.factor,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": model.rope_scaling.original_max_position_embeddings,
            },
        )
        config._attn_implementation = "sdpa"
        torch.manual_seed(seed)
        self.device = torch.device("cuda" if _cuda() else "cpu")
        with self.device:
            self.model = LlamaForCausalLM(config)
        self.amp = precision == "amp" and _cuda()
        if precision == "bf16" and _cuda():
            self.model.to(torch.bfloat16)
        self.model.train()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True
        )

    def step(self, micro_batches: list[dict]) -> float:
        total = 0.0
        for batch in micro_batches:
            tokens = batch["tokens"].to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = self.model(input_ids=tokens, labels=tokens).loss
            (loss / len(micro_batches)).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return (total / len(micro_batches)).item()


def measure(run, model, seq: int, mb: int, accum: int, warmup: int, steps: int) -> dict:
    data = list(batches(seq, mb, (warmup + steps) * accum))
    losses = []
    for i in range(warmup):
        losses.append(run.step(data[i * accum : (i + 1) * accum]))
    _sync()
    if _cuda():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        losses.append(run.step(data[i * accum : (i + 1) * accum]))
    _sync()
    elapsed = time.perf_counter() - start
    tokens_per_s = steps * accum * mb * seq / elapsed
    return {
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(tokens_per_s * flops_per_token(model, seq) / PEAK_FLOPS, 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if _cuda() else None,
        "step_s": round(elapsed / steps, 4),
        "losses": [round(x, 4) for x in losses],
    }


def throughput(args) -> dict:
    record = {
        "mode": "throughput",
        "system": args.system,
        "seq": args.seq,
        "mb": args.mb,
        "accum": args.accum,
    }
    cfg = train_config(
        args.kernels,
        args.seq,
        args.mb,
        args.accum,
        args.recompute,
        args.attention,
        args.preset,
        optimizer_impl="torch" if args.no_fused_adam else "auto",
    )
    if args.system == "mcore":
        record.update(kernels=args.kernels, recompute=args.recompute, attention=args.attention)
        if args.no_wgrad_fusion:
            from megatron_infi.models import spec

            spec.WGRAD_FUSION = False
        run = McoreRun(cfg)
        record.update(wgrad_fusion=run.wgrad_fusion, optimizer_impl=cfg.optimizer.impl)
    else:
        record.update(liger=args.liger, precision=args.hf_precision)
        run = HFRun(cfg.model, args.liger, args.hf_precision)
    record.update(measure(run, cfg.model, args.seq, args.mb, args.accum, args.warmup, args.steps))
    return record


def parity(args) -> dict:
    """Same initial weights and batches, `--steps` optimizer steps with kernels=torch then triton.

    Step 0 (identical weights and batch) differs only by the kernels' rounding: its loss and
    gradient norm are held to tight bounds. Later steps follow bf16 training's own divergence
    (a flipped rounding grows through the updates), so only the mean |difference| is bounded.
    """
    data = list(batches(args.seq, args.mb, args.steps))
    curves, grad_norms, weights = {}, {}, None
    for kernels in ("torch", "triton"):
        cfg = train_config(kernels, args.seq, args.mb, 1, "none", args.attention, args.preset)
        run = McoreRun(cfg, weights=weights)
        if weights is None:
            weights = run.state_dict()
        curves[kernels], grad_norms[kernels] = [], []
        for batch in data:
            curves[kernels].append(run.step([batch]))
            grad_norms[kernels].append(run.grad_norm)
        del run
        gc.collect()  # the model, optimizer and config reference each other
        if _cuda():
            torch.cuda.empty_cache()
    verdict = parity_verdict(
        curves, grad_norms, args.step0_loss_tol, args.step0_grad_norm_rtol, args.mean_tol
    )
    return {
        "mode": "parity",
        "seq": args.seq,
        "mb": args.mb,
        "steps": args.steps,
        "torch": [round(x, 4) for x in curves["torch"]],
        "triton": [round(x, 4) for x in curves["triton"]],
        "grad_norm_torch": [round(x, 4) for x in grad_norms["torch"]],
        "grad_norm_triton": [round(x, 4) for x in grad_norms["triton"]],
        **verdict,
    }


def parity_verdict(
    curves: dict, grad_norms: dict, step0_loss_tol: float, step0_grad_norm_rtol: float, mean_tol: float
) -> dict:
    """Judge kernels=triton against kernels=torch: step-0 loss and grad norm tightly, the mean
    |loss difference| over all steps loosely, and the loss must fall (by > 1 nat)."""
    diffs = [abs(a - b) for a, b in zip(curves["torch"], curves["triton"], strict=True)]
    step0_loss = diffs[0]
    step0_grad_norm = abs(grad_norms["triton"][0] - grad_norms["torch"][0]) / grad_norms["torch"][0]
    mean_diff = sum(diffs) / len(diffs)
    learned = curves["triton"][-1] < curves["triton"][0] - 1.0
    return {
        "step0_loss_abs": round(step0_loss, 5),
        "step0_grad_norm_rel": round(step0_grad_norm, 5),
        "mean_abs_diff": round(mean_diff, 4),
        "max_abs_diff": round(max(diffs), 4),  # reported, not judged
        "tolerances": {
            "step0_loss_abs": step0_loss_tol,
            "step0_grad_norm_rel": step0_grad_norm_rtol,
            "mean_abs_diff": mean_tol,
        },
        "learned": learned,
        "ok": step0_loss <= step0_loss_tol
        and step0_grad_norm <= step0_grad_norm_rtol
        and mean_diff <= mean_tol
        and learned,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["throughput", "parity"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--system", choices=["mcore", "hf"], default="mcore")
    parser.add_argument("--kernels", choices=["torch", "triton", "auto"], default="triton")
    parser.add_argument("--recompute", choices=["none", "selective", "full"], default="none")
    parser.add_argument("--attention", choices=["auto", "sdpa", "flash", "te"], default="auto")
    parser.add_argument("--liger", action="store_true")
    parser.add_argument(
        "--no-fused-adam", action="store_true", help="ablation: optimizer.impl=torch (foreach AdamW)"
    )
    parser.add_argument(
        "--no-wgrad-fusion", action="store_true", help="ablation: unfused weight-grad accumulation"
    )
    parser.add_argument("--hf-precision", choices=["bf16", "amp"], default="bf16")
    parser.add_argument("--preset", default="llama3.2-1b", help="tiny: a CPU smoke test of this script")
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--mb", type=int, default=2)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--step0-loss-tol", type=float, default=0.01, help="parity: |loss diff| at step 0")
    parser.add_argument(
        "--step0-grad-norm-rtol", type=float, default=0.02, help="parity: relative grad-norm diff at step 0"
    )
    parser.add_argument(
        "--mean-tol", type=float, default=0.05, help="parity: mean |loss diff| over the steps"
    )
    args = parser.parse_args(argv)
    t0 = time.time()
    try:
        record = throughput(args) if args.mode == "throughput" else parity(args)
    except Exception as err:  # record what failed; the other configurations still run
        import traceback

        traceback.print_exc()
        record = {
            "mode": args.mode,
            "system": args.system,
            "seq": args.seq,
            "mb": args.mb,
            "accum": args.accum,
        }
        record.update({"kernels": args.kernels} if args.system == "mcore" else {"liger": args.liger})
        record.update(error=f"{type(err).__name__}: {err}", ok=False)
    record["wall_s"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)
    return 0 if record.get("ok", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
