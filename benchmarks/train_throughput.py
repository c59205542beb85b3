"""Training throughput of one configuration on one GPU: tokens/s, MFU and peak memory.

    python benchmarks/train_throughput.py --impl mcore [--preset llama3.2-1b --seq 4096 --mbs 2] [k=v ...]
    python benchmarks/train_throughput.py --impl hf        # transformers LlamaForCausalLM, SDPA
    python benchmarks/train_throughput.py --impl hf-liger  # the same with Liger kernels

`mcore` is this project's trainer (Trainer.train_step on megatron-core, bf16 params with fp32 main
params and fp32 grad reduction) on random tokens; extra `k=v` arguments override its config (e.g.
`model.kernels=triton model.recompute=selective`). The HF baselines train in pure bf16 with fused
AdamW. Run each impl in its own process so peak memory is its own. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_infi.config.core import load_config  # noqa: E402
from megatron_infi.config.schema import ModelConfig, TrainConfig  # noqa: E402
from megatron_infi.models import architecture  # noqa: E402
from megatron_infi.training.metrics import flops_per_token  # noqa: E402

H100_BF16_PEAK = 989e12


def _time_steps(step_fn, warmup: int, steps: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step_fn()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


FUSIONS = (
    "gradient_accumulation_fusion",
    "apply_rope_fusion",
    "bias_activation_fusion",
    "cross_entropy_loss_fusion",
)


def bench_mcore(cfg: TrainConfig, warmup: int, steps: int) -> tuple[list[float], dict]:
    """Step times, and what the trainer resolved: AdamW kernel and megatron-core fusions."""
    from megatron_infi.data import gpt_data
    from megatron_infi.training import patches
    from megatron_infi.training.trainer import Trainer

    patches.apply()
    trainer = Trainer(cfg).setup()
    resolved = {"optimizer_impl": cfg.optimizer.impl}
    resolved.update({name: getattr(trainer._tconfig, name) for name in FUSIONS})
    train_ds, _ = gpt_data.build_datasets(cfg, trainer.tokenizer, trainer.world.data)
    iterator = trainer._iterators(train_ds, 0)
    return _time_steps(lambda: trainer.train_step(iterator), warmup, steps), resolved


def hf_llama_config(model: ModelConfig):
    """The transformers config of the same model (the conversion's own translation)."""
    return architecture(model.arch).hf.hf_config_from_model(model, {})


def bench_hf(cfg: TrainConfig, warmup: int, steps: int, liger: bool) -> list[float]:
    from transformers import LlamaForCausalLM

    if liger:
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama()
    torch.manual_seed(0)
    config = hf_llama_config(cfg.model)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).to(device="cuda", dtype=torch.bfloat16)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    batch = torch.randint(
        0, cfg.model.vocab_size, (cfg.train.micro_batch_size, cfg.data.seq_length), device="cuda"
    )
    accumulation = cfg.train.global_batch_size // cfg.train.micro_batch_size

    def step():
        for _ in range(accumulation):
            loss = model(input_ids=batch, labels=batch).loss / accumulation
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _time_steps(step, warmup, steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--impl", choices=["mcore", "hf", "hf-liger"], required=True)
    parser.add_argument("--preset", default="llama3.2-1b")
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--mbs", type=int, default=2)
    parser.add_argument("--gbs", type=int, default=None, help="global batch (default: one micro-batch)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--label", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("this benchmark needs a CUDA device", file=sys.stderr)
        return 2
    gbs = args.gbs or args.mbs
    run_dir = tempfile.mkdtemp(prefix="bench-")
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"run_dir={run_dir}",
            f"model.preset={args.preset}",
            "data.mock=true",
            f"data.seq_length={args.seq}",
            f"train.micro_batch_size={args.mbs}",
            f"train.global_batch_size={gbs}",
            f"train.train_iters={args.warmup + args.steps + 1}",
            "train.precision=bf16",
            "logging.tensorboard=false",
            *args.overrides,
        ],
    )
    torch.cuda.reset_peak_memory_stats()
    resolved = {}
    if args.impl == "mcore":
        times, resolved = bench_mcore(cfg, args.warmup, args.steps)
    else:
        times = bench_hf(cfg, args.warmup, args.steps, liger=args.impl == "hf-liger")
    step_time = statistics.median(times)
    tokens_per_s = gbs * args.seq / step_time
    mfu = tokens_per_s * flops_per_token(cfg.model, args.seq) / H100_BF16_PEAK
    result = {
        "label": args.label or args.impl,
        "impl": args.impl,
        "preset": args.preset,
        "seq": args.seq,
        "mbs": args.mbs,
        "gbs": gbs,
        "overrides": args.overrides,
        "resolved": resolved,
        "step_s_median": round(step_time, 4),
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(mfu, 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
