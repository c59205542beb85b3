"""SFT throughput: packed (padding-free) vs padded batches, same model, data, steps and batch size.

Real tokens per second (padding excluded) as TRL counts them, after one warm-up step, on whatever
device is there (CPU: fp32 + SDPA; GPU: bf16 + flash-attn when installed).

    python benchmarks/posttrain_sft_throughput.py --steps 6 --max-length 512 --micro-batch 4
    python benchmarks/posttrain_sft_throughput.py --model runs/infir-1b/base-hf --max-length 4096 --micro-batch 8

Without --model a random Llama of the `tiny` preset's shape (hidden 128, 4 layers, vocab 128,256) is
built on the real Llama-3 tokenizer. Data: GSM-Symbolic worked solutions (reasoning-gym).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

from transformers import TrainerCallback

from megatron_infi.config.core import load_config
from megatron_infi.demo import reference_data
from megatron_infi.posttrain import common
from megatron_infi.posttrain.sft import SFTStageConfig, build_phase_trainer


class StepClock(TrainerCallback):
    """Wall time and real tokens from the end of the first (warm-up) step to the end of training."""

    def __init__(self, trainer_ref):
        self.trainer_ref = trainer_ref
        self.start = self.tokens_at_start = None
        self.end = self.tokens_at_end = None

    def on_step_end(self, args, state, control, **kwargs):
        tokens = self.trainer_ref[0]._total_train_tokens
        if state.global_step == 1:
            self.start, self.tokens_at_start = time.perf_counter(), tokens
        self.end, self.tokens_at_end = time.perf_counter(), tokens


def tiny_model(root: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from megatron_infi.data.tokenizer import build_llama3_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_llama3_tokenizer(root / "tokenizer"))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model"


def measure(model: Path, data: Path, out: Path, packing: bool, args) -> dict:
    cfg = load_config(
        SFTStageConfig,
        None,
        [
            f"model={model}",
            f"output_dir={out}",
            f"max_length={args.max_length}",
            f"packing={str(packing).lower()}",
            f"phases=[{{name: bench, data: [{data}], schedule: {{max_steps: {args.steps}, "
            f"global_batch_size: {args.micro_batch}, micro_batch_size: {args.micro_batch}}}}}]",
            f"checkpoint.save_interval={args.steps * 10}",
            "logging.tensorboard=false",
            f"logging.log_interval={args.steps}",
        ],
    )
    holder = []
    clock = StepClock(holder)
    built = build_phase_trainer(cfg, 0, model, extra_callbacks=[clock])
    holder.append(built.trainer)
    built.trainer.train()
    seconds = clock.end - clock.start
    tokens = clock.tokens_at_end - clock.tokens_at_start
    return {"packing": packing, "timed_steps": args.steps - 1, "seconds": round(seconds, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="HF model dir (default: a random tiny Llama)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = Path(args.model) if args.model else tiny_model(root)
        data = reference_data.write_jsonl(
            root / "gsm.jsonl",
            reference_data.sft_records(reference_data.gsm_symbolic(args.examples, seed=7), "gsm"),
        )
        runs = [measure(model, data, root / f"run-{p}", p, args) for p in (False, True)]
    device = (
        torch.cuda.get_device_name(0)
        if common.on_cuda()
        else f"CPU ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"
    )
    result = {
        "date": date.today().isoformat(),
        "device": device,
        "precision": common.select_precision("auto"),
        "model": args.model or "random tiny Llama (hidden 128, 4 layers, vocab 128256)",
        "max_length": args.max_length,
        "micro_batch": args.micro_batch,
        "runs": runs,
        "packing_speedup": round(runs[1]["tokens_per_s"] / runs[0]["tokens_per_s"], 2),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
