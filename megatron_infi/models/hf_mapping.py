"""How an architecture maps onto Hugging Face, and the tensor transforms every mapping shares.

A mapping is data: which megatron-core checkpoint key is made from which Hugging Face tensors and
how (`copy`, fused `qkv`, fused `gate_up`, vocab-padded `vocab`), plus two functions that translate
the model config between HF's config.json and our `ModelConfig` fields. Each architecture module
(`megatron_infi/models/<arch>.py`) declares its mapping; the streaming converters in
checkpoints_tools/ apply it one layer at a time.

Layouts (megatron-core's, global and independent of TP, as its sharded state dict writes them):
- fused QKV, per query group g: the group's q heads, then its k head, then its v head, along
  dim 0: [G * (q_per_group + 2) * head_dim, hidden] (and the same rows for the bias);
- fused gate/up: [gate; up] along dim 0: [2 * ffn, hidden];
- embedding / output layer: [padded_vocab, hidden], rows past the tokenizer vocab are padding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from megatron_infi.errors import DataError

Kind = Literal["copy", "qkv", "gate_up", "vocab"]


class ConversionError(DataError):
    """A model or checkpoint that cannot be converted; the message names the file or field (exit 2)."""


@dataclass(frozen=True)
class Rule:
    """One megatron-core tensor and the HF tensors it is made of.

    `hf` names contain `{layer}` for per-layer tensors (megatron-core stacks those along a
    leading layer axis under one key). `when="untied"`: only when the embeddings are not tied.
    """

    mcore: str
    kind: Kind
    hf: tuple[str, ...]
    when: Literal["untied"] | None = None

    @property
    def per_layer(self) -> bool:
        return self.mcore.startswith("decoder.layers.")

    def hf_names(self, layer: int | None = None) -> list[str]:
        return [name.format(layer=layer) for name in self.hf]


@dataclass(frozen=True)
class HFMapping:
    # HF identifiers this mapping accepts (config.json `model_type`, `architectures`).
    model_type: str
    hf_architecture: str
    rules: tuple[Rule, ...]
    # HF config object -> ModelConfig fields (raises ConversionError naming the unsupported field).
    model_fields_from_hf: Callable[[object], dict]
    # (ModelConfig, token ids) -> HF config object (transformers' own config class).
    hf_config_from_model: Callable[..., object]

    def active_rules(self, model) -> list[Rule]:
        """The rules that apply to a ModelConfig (no separate output layer when tied)."""
        return [rule for rule in self.rules if rule.when is None or not model.tie_embeddings]


# ----------------------------------------------------------------------------- transforms
def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    """HF q/k/v projections (weights [n*d, h] or biases [n*d]) -> megatron-core's grouped QKV."""
    rest = q.shape[1:]
    q = q.reshape(groups, -1, *rest)
    k = k.reshape(groups, -1, *rest)
    v = v.reshape(groups, -1, *rest)
    return torch.cat([q, k, v], dim=1).reshape(-1, *rest)


def split_qkv(qkv: torch.Tensor, heads: int, groups: int, head_dim: int) -> list[torch.Tensor]:
    """Inverse of `fuse_qkv`: megatron-core's grouped QKV -> [q, k, v] in HF's layout."""
    rest = qkv.shape[1:]
    q_rows = heads // groups * head_dim
    grouped = qkv.reshape(groups, q_rows + 2 * head_dim, *rest)
    q, k, v = torch.split(grouped, [q_rows, head_dim, head_dim], dim=1)
    return [t.reshape(-1, *rest).contiguous() for t in (q, k, v)]


def fuse_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.cat([gate, up], dim=0)


def split_gate_up(fc1: torch.Tensor) -> list[torch.Tensor]:
    gate, up = torch.chunk(fc1, 2, dim=0)
    return [gate.contiguous(), up.contiguous()]


def pad_vocab(weight: torch.Tensor, padded_rows: int) -> torch.Tensor:
    """Zero rows after the real vocab: padded ids never occur in data."""
    if weight.shape[0] == padded_rows:
        return weight
    out = weight.new_zeros(padded_rows, *weight.shape[1:])
    out[: weight.shape[0]] = weight
    return out


def to_mcore(rule: Rule, tensors: list[torch.Tensor], model, padded_vocab: int) -> torch.Tensor:
    """HF tensors of one rule (one layer) -> the megatron-core tensor, in the global layout."""
    if rule.kind == "copy":
        return tensors[0]
    if rule.kind == "qkv":
        return fuse_qkv(*tensors, groups=model.num_query_groups)
    if rule.kind == "gate_up":
        return fuse_gate_up(*tensors)
    if rule.kind == "vocab":
        return pad_vocab(tensors[0], padded_vocab)
    raise AssertionError(rule.kind)


def to_hf(rule: Rule, tensor: torch.Tensor, model) -> list[torch.Tensor]:
    """Inverse of `to_mcore`: one megatron-core tensor (one layer) -> the rule's HF tensors."""
    if rule.kind == "copy":
        return [tensor]
    if rule.kind == "qkv":
        return split_qkv(tensor, model.num_attention_heads, model.num_query_groups, model.head_dim)
    if rule.kind == "gate_up":
        return split_gate_up(tensor)
    if rule.kind == "vocab":
        return [tensor[: model.vocab_size].contiguous()]
    raise AssertionError(rule.kind)


# ----------------------------------------------------------------------------- config helpers
# megatron-core's llama3 RoPE scaling fixes these three (GPTModel passes only the factor).
LLAMA3_FIXED = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConversionError(f"config.json: {field_name}: {message}")


def rope_fields(hf_config, allowed: tuple[str, ...]) -> dict:
    """HF `rope_parameters` (transformers normalises legacy rope_theta/rope_scaling into it) ->
    ModelConfig's rope_theta and rope_scaling."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    require(
        rope_type in allowed,
        "rope_parameters.rope_type",
        f"{rope_type!r} is not supported for this architecture (supported: {', '.join(allowed)})",
    )
    require(
        not params.get("partial_rotary_factor") or params["partial_rotary_factor"] == 1.0,
        "rope_parameters.partial_rotary_factor",
        "partial rotary embeddings are not supported",
    )
    fields = {"rope_theta": float(params.get("rope_theta", 10000.0))}
    if rope_type == "llama3":
        for name, value in LLAMA3_FIXED.items():
            require(
                float(params.get(name, value)) == float(value),
                f"rope_parameters.{name}",
                f"{params.get(name)} is not supported: megatron-core's llama3 scaling fixes it at {value}",
            )
        fields["rope_scaling"] = {
            "type": "llama3",
            "factor": float(params["factor"]),
            "original_max_position_embeddings": int(params.get("original_max_position_embeddings", 8192)),
        }
    else:
        fields["rope_scaling"] = {"type": "none", "factor": 1.0, "original_max_position_embeddings": 8192}
    return fields


def rope_parameters(model) -> dict:
    """ModelConfig -> HF `rope_parameters`."""
    if model.rope_scaling.type == "llama3":
        return {
            "rope_type": "llama3",
            "rope_theta": model.rope_theta,
            "factor": model.rope_scaling.factor,
            **LLAMA3_FIXED,
        }
    return {"rope_type": "default", "rope_theta": model.rope_theta}


def common_fields(hf_config) -> dict:
    """The fields every Llama-like decoder shares, with the checks megatron-core's layer imposes."""
    c = hf_config
    require(getattr(c, "hidden_act", "silu") == "silu", "hidden_act", f"{c.hidden_act!r}: only silu (SwiGLU)")
    fields = dict(
        num_layers=c.num_hidden_layers,
        hidden_size=c.hidden_size,
        ffn_hidden_size=c.intermediate_size,
        num_attention_heads=c.num_attention_heads,
        num_query_groups=c.num_key_value_heads or c.num_attention_heads,
        vocab_size=c.vocab_size,
        max_position_embeddings=c.max_position_embeddings,
        norm_eps=float(c.rms_norm_eps),
        tie_embeddings=bool(c.tie_word_embeddings),
    )
    # Always given, so that a preset with a head_dim of its own is overridden where needed. Unset
    # (absent from Qwen2's config) means hidden_size / num_attention_heads in transformers.
    head_dim = getattr(c, "head_dim", None)
    if head_dim is None and c.num_attention_heads:
        head_dim = c.hidden_size // c.num_attention_heads
    return {**fields, "head_dim": head_dim}


def full_attention_only(c, switch: str) -> None:
    """Refuse sliding-window attention: megatron-core's layer here attends causally over the
    whole sequence. `switch` is the config.json field that turns the window on."""
    value = getattr(c, switch, None)
    require(not value, switch, f"{value!r}: sliding-window attention is not supported")
    layer_types = set(getattr(c, "layer_types", None) or ["full_attention"])
    require(layer_types == {"full_attention"}, "layer_types", f"{sorted(layer_types)}: only full attention")


def common_hf_kwargs(model, token_ids: dict) -> dict:
    """ModelConfig -> keyword arguments shared by the Llama-like HF config classes."""
    return dict(
        vocab_size=model.vocab_size,
        hidden_size=model.hidden_size,
        intermediate_size=model.ffn_hidden_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_attention_heads,
        num_key_value_heads=model.num_query_groups,
        head_dim=model.head_dim,
        max_position_embeddings=model.max_position_embeddings,
        rms_norm_eps=model.norm_eps,
        rope_parameters=rope_parameters(model),
        tie_word_embeddings=model.tie_embeddings,
        hidden_act="silu",
        **token_ids,
    )
