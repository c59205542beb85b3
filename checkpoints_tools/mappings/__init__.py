"""Architecture mappings, one module each; this registry is the only place that lists them."""

from __future__ import annotations

from megatron_infi.checkpoints_tools.mappings import llama, qwen2
from megatron_infi.checkpoints_tools.mappings.base import ArchMapping, ConversionError

MAPPINGS: dict[str, ArchMapping] = {m.arch: m for m in (llama.MAPPING, qwen2.MAPPING)}


def for_arch(arch: str) -> ArchMapping:
    if arch not in MAPPINGS:
        raise ConversionError(f"model.arch={arch!r} has no HF mapping (known: {', '.join(sorted(MAPPINGS))})")
    return MAPPINGS[arch]


def for_hf_config(hf_config, source: str = "config.json") -> ArchMapping:
    """The mapping for an HF config, by `model_type` and `architectures`; a clear error otherwise."""
    model_type = getattr(hf_config, "model_type", None)
    architectures = list(getattr(hf_config, "architectures", None) or [])
    for mapping in MAPPINGS.values():
        if model_type == mapping.model_type:
            if architectures and mapping.hf_architecture not in architectures:
                raise ConversionError(
                    f"{source}: architectures={architectures} is not {mapping.hf_architecture} "
                    f"(only causal-LM checkpoints convert)"
                )
            return mapping
    supported = ", ".join(f"{m.hf_architecture} (model_type {m.model_type})" for m in MAPPINGS.values())
    raise ConversionError(
        f"{source}: unsupported architecture model_type={model_type!r} architectures={architectures}; "
        f"supported: {supported}"
    )


__all__ = ["MAPPINGS", "ArchMapping", "ConversionError", "for_arch", "for_hf_config"]
