"""Print what each `model.kernels` backend resolves to on this machine: the modules' backend, the
attention backend, the fusion fields of megatron-core's TransformerConfig and the AdamW kernel, or
why the backend cannot run here. The GPU scripts print it first, so every result they report says
which fusions it ran with.

    python benchmarks/resolved_fusions.py [--preset llama3.2-1b] [--precision bf16] [k=v ...]

One JSON line per backend (auto, te, triton, torch); exit 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_infi.config.core import ConfigError, load_config  # noqa: E402
from megatron_infi.config.schema import TrainConfig  # noqa: E402

FUSION_FIELDS = (
    "gradient_accumulation_fusion",
    "apply_rope_fusion",
    "bias_activation_fusion",
    "cross_entropy_loss_fusion",
    "cross_entropy_fusion_impl",
)


def resolve(kernels: str, preset: str, precision: str, overrides: list[str]) -> dict:
    from megatron_infi.kernels.attention import resolve_attention
    from megatron_infi.models.gpt import resolve_dtype, transformer_config
    from megatron_infi.models.spec import resolve_backend
    from megatron_infi.training.optim import resolve_adam_impl

    row = {"kernels": kernels}
    try:
        cfg = load_config(
            TrainConfig,
            None,
            [
                "data.mock=true",
                f"model.preset={preset}",
                f"model.kernels={kernels}",
                f"train.precision={precision}",
                *overrides,
            ],
        )
        row["backend"] = resolve_backend(cfg.model)
        row["attention"] = resolve_attention(cfg.model.attention)
        config = transformer_config(cfg.model, cfg.parallel, resolve_dtype(cfg.train.precision))
        row.update({name: getattr(config, name) for name in FUSION_FIELDS})
        row["optimizer_impl"] = resolve_adam_impl(
            cfg.optimizer.impl, "cuda" if torch.cuda.is_available() else "cpu"
        )
    except (ConfigError, ValueError) as err:
        row["unavailable"] = str(err)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llama3.2-1b")
    parser.add_argument("--precision", default="bf16", choices=["auto", "bf16", "fp32"])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.attention=sdpa")
    args = parser.parse_args(argv)
    for kernels in ("auto", "te", "triton", "torch"):
        print(json.dumps(resolve(kernels, args.preset, args.precision, args.overrides)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
