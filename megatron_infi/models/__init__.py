"""The model: one module per architecture, the registry that lists them, and the megatron-core
model every architecture builds into (`gpt.py`, `spec.py`).

An architecture module (`llama.py`, `qwen2.py`, `qwen3.py`, `mistral.py`) owns everything that makes
that architecture: its presets (`model.preset: qwen3-0.6b`), what its decoder changes against
Llama's (`Architecture.qkv_bias`, `qk_norm`; `architecture.py` turns these into TransformerConfig
fields and models/spec.py into layer modules, Transformer Engine's or ours), and its Hugging Face
mapping (`hf_mapping.py`: tensor rules and config.json <-> ModelConfig). Everything else - config
validation, the model builders, the converters in checkpoints_tools/ - asks this registry and never
branches on an architecture's name. Importing this package registers the architectures and their
presets with megatron_infi.config (which may not import it), so an entry point that loads a training
config imports it first.

Adding an architecture:
1. `models/<name>.py` declaring `ARCHITECTURE = Architecture(name=..., presets=..., hf=HFMapping(...),
   ...)`: the presets of its real shapes, the facts it differs in, the HF tensor rules (usually
   Llama's rules plus its own), `model_fields_from_hf` refusing what megatron-core's layer cannot
   express (naming the config.json field) and `hf_config_from_model` with transformers' config class.
   A decoder change without an `Architecture` field yet gets one field there, used by
   `transformer_config_fields` and models/spec.py.
2. List the module in `ARCHITECTURES` below.
3. Fixtures: a tiny random HF model of it in tests/checkpoints_tools/tiny_hf.py (`ARCHS`), which puts
   it through the conversion round trips (HF -> megatron TP2 x PP2 -> HF bit-exact) and the logit
   parity tests; a real shape in test_mappings.py's preset table.
"""

from __future__ import annotations

from megatron_infi.config.core import ConfigError
from megatron_infi.config.schema import register_architecture
from megatron_infi.models import llama, mistral, qwen2, qwen3
from megatron_infi.models.architecture import Architecture
from megatron_infi.models.hf_mapping import ConversionError

ARCHITECTURES: dict[str, Architecture] = {
    module.ARCHITECTURE.name: module.ARCHITECTURE for module in (llama, qwen2, qwen3, mistral)
}
for _arch in ARCHITECTURES.values():
    register_architecture(_arch.name, _arch.presets)


def architecture(name: str) -> Architecture:
    """The registered architecture `name` (a ModelConfig's `arch`)."""
    if name not in ARCHITECTURES:
        raise ConfigError(
            "model.arch", f"unknown architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))})"
        )
    return ARCHITECTURES[name]


def for_hf_config(hf_config, source: str = "config.json") -> Architecture:
    """The architecture of an HF config, by `model_type` and `architectures`; a clear error otherwise."""
    model_type = getattr(hf_config, "model_type", None)
    architectures = list(getattr(hf_config, "architectures", None) or [])
    for arch in ARCHITECTURES.values():
        if model_type == arch.hf.model_type:
            if architectures and arch.hf.hf_architecture not in architectures:
                raise ConversionError(
                    f"{source}: architectures={architectures} is not {arch.hf.hf_architecture} "
                    f"(only causal-LM checkpoints convert)"
                )
            return arch
    supported = ", ".join(
        f"{a.hf.hf_architecture} (model_type {a.hf.model_type})" for a in ARCHITECTURES.values()
    )
    raise ConversionError(
        f"{source}: unsupported architecture model_type={model_type!r} architectures={architectures}; "
        f"supported: {supported}"
    )


__all__ = ["ARCHITECTURES", "Architecture", "ConversionError", "architecture", "for_hf_config"]
