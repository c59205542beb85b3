"""Throughput and wall-time estimate of a training run from an assumed MFU.

    python launch/estimate.py --config launch/configs/pretrain/infir_1b_pretrain.yaml --gpus 64 --mfu 0.4
    python launch/estimate.py --preset qwen2.5-7b --seq 32768 --tokens 6.6e9 --gpus 16 --mfu 0.3

FLOPs per token come from megatron_infi.training.metrics (6 x matmul params incl. the LM head +
12 x layers x heads x head_dim x seq), the formula the trainer's MFU log line uses, so an estimate made here and
a measured MFU from a run compare directly: replace --mfu by the measured value in
benchmarks/RESULTS.md and the wall time follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import megatron_infi.models  # noqa: F401  (registers the architectures and their presets)
from megatron_infi.config.core import ConfigError, command_parser, from_dict, load_config
from megatron_infi.config.schema import ModelConfig, TrainConfig
from megatron_infi.errors import command
from megatron_infi.training.metrics import flops_per_token, matmul_params, query_channels

H100_BF16_DENSE = 989e12


@dataclass
class Estimate:
    preset: str
    matmul_params: int
    num_layers: int
    query_channels: int
    seq_length: int
    flops_per_token: float
    tokens: float
    tokens_per_step: int | None
    gpus: int
    mfu: float
    peak_flops: float

    @property
    def tokens_per_s(self) -> float:
        return self.gpus * self.mfu * self.peak_flops / self.flops_per_token

    @property
    def wall_s(self) -> float:
        return self.tokens / self.tokens_per_s

    def report(self) -> str:
        hours = self.wall_s / 3600
        lines = [
            f"model        {self.preset}: {self.matmul_params:.4g} matmul params (LM head incl.), seq {self.seq_length}",
            f"FLOPs/token  6 x {self.matmul_params:.4g} + 12 x {self.num_layers} x {self.query_channels} x "
            f"{self.seq_length} = {self.flops_per_token:.4g}",
            f"tokens       {self.tokens:.4g}",
            f"throughput   {self.gpus} GPUs x {self.mfu:.2f} MFU x {self.peak_flops / 1e12:.0f} TFLOP/s / "
            f"{self.flops_per_token:.4g} = {self.tokens_per_s:.4g} tokens/s "
            f"({self.tokens_per_s / self.gpus / 1e3:.1f}k per GPU)",
        ]
        if self.tokens_per_step:
            lines.append(
                f"step time    {self.tokens_per_step:,} tokens / step -> {self.tokens_per_step / self.tokens_per_s:.3g} s"
            )
        lines.append(
            f"wall time    {self.tokens:.4g} / {self.tokens_per_s:.4g} = {self.wall_s:.4g} s = {hours:.1f} h "
            f"= {hours / 24:.1f} days ({self.gpus * hours:,.0f} GPU-hours)"
        )
        return "\n".join(lines)


def estimate(
    model: ModelConfig,
    seq_length: int,
    tokens: float,
    gpus: int,
    mfu: float,
    peak_flops: float = H100_BF16_DENSE,
    tokens_per_step: int | None = None,
) -> Estimate:
    if gpus < 1:
        raise ConfigError("--gpus", f"must be >= 1, got {gpus}")
    if not 0 < mfu <= 1:
        raise ConfigError("--mfu", f"must be in (0, 1], got {mfu}")
    return Estimate(
        preset=model.preset,
        matmul_params=matmul_params(model),
        num_layers=model.num_layers,
        query_channels=query_channels(model),
        seq_length=seq_length,
        flops_per_token=flops_per_token(model, seq_length),
        tokens=float(tokens),
        tokens_per_step=tokens_per_step,
        gpus=gpus,
        mfu=mfu,
        peak_flops=peak_flops,
    )


def from_train_config(cfg: TrainConfig, gpus: int, mfu: float, peak_flops: float | None = None) -> Estimate:
    """The run a training config describes: train_iters x global batch x seq tokens."""
    per_step = cfg.train.global_batch_size * cfg.data.seq_length
    return estimate(
        cfg.model,
        cfg.data.seq_length,
        cfg.train.train_iters * per_step,
        gpus,
        mfu,
        peak_flops or cfg.logging.peak_flops,
        tokens_per_step=per_step,
    )


@command("launch/estimate.py")
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("launch/estimate.py", __doc__.split("\n\n")[0])
    parser.add_argument("--config", help="a training YAML (pretrain / anneal): tokens from its schedule")
    parser.add_argument("--preset", help="a model preset instead of --config (e.g. qwen2.5-7b for SFT)")
    parser.add_argument("--seq", type=int, help="sequence length (with --preset)")
    parser.add_argument("--tokens", type=float, help="tokens to train on (with --preset)")
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--mfu", type=float, required=True, help="model FLOPs utilisation, e.g. 0.4")
    parser.add_argument("--peak-tflops", type=float, help="per-GPU dense bf16 peak (default 989, H100)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for --config")
    args = parser.parse_args(argv)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if args.config:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        result = from_train_config(cfg, args.gpus, args.mfu, peak)
    elif args.preset and args.seq and args.tokens:
        model = from_dict(ModelConfig, TrainConfig.preprocess({"model": {"preset": args.preset}})["model"])
        result = estimate(model, args.seq, args.tokens, args.gpus, args.mfu, peak or H100_BF16_DENSE)
    else:
        parser.error("give --config, or --preset with --seq and --tokens")
    print(result.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
