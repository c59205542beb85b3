"""Step-0 loss parity: the HF model's loss on the exact token windows the trainer validated before
its first update (`train.eval_at_start`), next to the validation loss the trainer logged.

    infi convert step0-loss --run RUN_DIR --hf HF_DIR [--dtype fp32|bf16]

Continued pretraining starts from a converted HF model (`infi convert from-hf`, then
`checkpoint.load`); if conversion, model config or data were wrong, the loss at step 0 would not be
the HF model's. The trainer logs `valid_loss` at iteration 0 into `RUN/logs/train_metrics.jsonl`;
this rebuilds the same validation samples from `RUN/config.yaml` (megatron-core's GPTDataset, same
seed, sizes and split, so the same shuffled windows), runs the HF model on them with the same labels
and loss mask, and reports both losses and their difference (token-weighted means, in nats).

input:
  --run RUN_DIR: a training run dir trained with train.eval_at_start=true (its config.yaml and
  logs/train_metrics.jsonl); --hf DIR: the Hugging Face model it was converted from

output:
  the report as JSON on stdout (step0_loss_megatron, step0_loss_hf, abs_diff, windows, tp, pp);
  exit 0 within --tolerance, 1 over it

example: infi convert step0-loss --run runs/demo/cpt/run --hf .venv/assets/smollm2-135m-instruct
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from megatron_infi.config.core import command_parser, from_dict, load_yaml
from megatron_infi.config.schema import TrainConfig
from megatron_infi.errors import command
from megatron_infi.models.hf_mapping import ConversionError


def run_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConversionError(f"{path}: not found (a training run dir has the resolved config.yaml)")
    return from_dict(TrainConfig, load_yaml(path))


def logged_step0_loss(run_dir: str | Path) -> float:
    """The validation loss the trainer logged at iteration 0."""
    path = Path(run_dir) / "logs" / "train_metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("iteration") == 0 and "valid_loss" in record:
                return float(record["valid_loss"])
    raise ConversionError(f"{path}: no validation loss at iteration 0 (run with train.eval_at_start=true)")


def step0_windows(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """tokens / labels / loss_mask [n, seq] of the validation samples evaluated at step 0: the first
    eval_iters x global_batch_size samples of the validation split, whatever the DP layout."""
    from megatron_infi.data import gpt_data

    tokenizer = gpt_data.preflight_data(cfg)
    _, valid = gpt_data.build_datasets(cfg, tokenizer, data_parallel_size=1)
    count = cfg.train.eval_iters * cfg.train.global_batch_size
    if valid is None or len(valid) < count:
        raise ConversionError(f"{cfg.run_dir}: the validation split has fewer than {count} samples")
    samples = [valid[i] for i in range(count)]
    return {
        key: torch.stack([torch.as_tensor(s[key]) for s in samples])
        for key in ("tokens", "labels", "loss_mask")
    }


def hf_loss(
    hf_dir: str | Path,
    windows: dict[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    batch_size: int = 4,
) -> float:
    """Token-weighted mean cross-entropy of the HF model on `windows` (the trainer's loss)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=dtype, local_files_only=True).eval()
    total, tokens = 0.0, 0.0
    with torch.inference_mode():
        for start in range(0, len(windows["tokens"]), batch_size):
            ids = windows["tokens"][start : start + batch_size]
            labels = windows["labels"][start : start + batch_size]
            mask = windows["loss_mask"][start : start + batch_size].float()
            logits = model(input_ids=ids).logits.float()
            losses = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), labels.flatten(), reduction="none"
            ).view_as(mask)
            total += float((losses * mask).sum(dtype=torch.float64))
            tokens += float(mask.sum())
    return total / max(tokens, 1.0)


def compare(run_dir: str | Path, hf_dir: str | Path, dtype: str = "fp32") -> dict:
    cfg = run_config(run_dir)
    megatron = logged_step0_loss(run_dir)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    windows = step0_windows(cfg)
    hf = hf_loss(hf_dir, windows, torch_dtype)
    return {
        "step0_loss_megatron": megatron,
        "step0_loss_hf": hf,
        "abs_diff": abs(megatron - hf),
        "windows": int(windows["tokens"].shape[0]),
        "seq_length": int(windows["tokens"].shape[1]),
        "tp": cfg.parallel.tensor,
        "pp": cfg.parallel.pipeline,
        "precision": cfg.train.precision,
    }


@command("infi convert step0-loss")
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("infi convert step0-loss", __doc__)
    parser.add_argument(
        "--run", required=True, help="training run dir (trained with train.eval_at_start=true)"
    )
    parser.add_argument("--hf", required=True, help="the Hugging Face model dir the run was converted from")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="HF model dtype")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="exit 1 when |difference| exceeds it")
    args = parser.parse_args(argv)
    report = compare(args.run, args.hf, args.dtype)  # bad input raises: one line, exit 2
    print(json.dumps(report, indent=2))
    return 0 if report["abs_diff"] <= args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
