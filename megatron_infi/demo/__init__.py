"""`make demo` / `make demo-real`: the pipeline on CPU, on real data and a real model shipped in PyPI packages.

Nothing outside this package imports it (tests and benchmarks may): it is the one place that knows
the demo's paths and sizes. Every stage loads its config the way a user does, `load_config(cls,
launch/configs/..., overrides)`, with the demo's paths given as dotted overrides.

run            the stage driver (`python -m megatron_infi.demo`) and the toy track's stages
stage          what every stage shares (the demo dir, torchrun, the failed-check error)
real_stages    the real model's track (`make demo-real`): real_cpt (continued pretraining of
               SmolLM2) and real_posttrain (its verifiable task, SFT, DPO, evaluation)
data / corpus  the pretraining-data stage and its bundled real corpus
sft_data / sft_inputs   the SFT-selection stage and its real inputs in several formats
posttrain / reference_data   SFT -> DPO pairs -> DPO at toy scale and the real maths data they use
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from megatron_infi.config.core import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "launch" / "configs"


def override(key: str, value: Any) -> str:
    """A dotted `key=value` override for any JSON value (JSON is YAML, which overrides parse)."""
    return f"{key}={json.dumps(value if not isinstance(value, Path) else str(value))}"


def demo_config[T](cls: type[T], relpath: str, values: dict[str, Any] | None = None) -> T:
    """Load `launch/configs/<relpath>` as `cls` with `values` ({dotted key: value}) as overrides."""
    overrides = [override(key, value) for key, value in (values or {}).items()]
    return load_config(cls, CONFIGS / relpath, overrides)


def fast_precision() -> str:
    """bf16 where this machine computes it natively (a GPU, or a CPU that oneDNN runs bf16 on:
    AVX512 / AMX), else fp32. For the demo's stages where only speed is at stake, never for a
    parity check: on a 2-core AVX512-BF16 CPU it made SmolLM2 CPT ~2.5x faster and its generation
    prefill ~3x."""
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def generation_dtype() -> str:
    """fast_precision() in the generation backend's spelling."""
    return {"bf16": "bfloat16", "fp32": "float32"}[fast_precision()]
