"""Which modules make up a transformer layer: the selection point between Transformer Engine,
our kernels and torch reference ops. The layer's structure (pre-norm, GQA self-attention with
fused QKV, SwiGLU MLP) is the same whichever is chosen, and checkpoints use Transformer Engine's
parameter names in every case, so they load across backends.
"""

from __future__ import annotations

import functools

from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.torch_norm import WrappedTorchNorm
from megatron.core.transformer.transformer_block import TransformerBlock, TransformerBlockSubmodules
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

from kernels.attention import select_core_attention, transformer_engine_available
from megatron_infi.config.core import ConfigError
from megatron_infi.config.schema import ModelConfig

# Local-spec names -> the TE-spec names (TE fuses the pre-norms into the following linear).
_TE_NAMES = {
    "input_layernorm.": "self_attention.linear_qkv.layer_norm_",
    "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_",
}


def resolve_backend(model: ModelConfig) -> str:
    """'te' when Transformer Engine is usable and allowed, else 'torch'."""
    if model.kernels == "te" and not transformer_engine_available():
        raise ValueError("model.kernels=te but Transformer Engine is not installed or CUDA is unavailable")
    if model.kernels in ("auto", "te") and transformer_engine_available():
        return "te"
    return "torch"


def _te_layer_spec() -> ModuleSpec:
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

    return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=False)


def _local_layer_spec(model: ModelConfig) -> ModuleSpec:
    norm = WrappedTorchNorm
    attention = "sdpa" if model.attention == "auto" else model.attention
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=norm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=ColumnParallelLinear,
                    core_attention=select_core_attention(attention),
                    linear_proj=RowParallelLinear,
                    q_layernorm=IdentityOp,
                    k_layernorm=IdentityOp,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=norm,
            mlp=functools.partial(
                MLP.as_mlp_submodule,
                submodules=MLPSubmodules(linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear),
            ),
            mlp_bda=get_bias_dropout_add,
            sharded_state_dict_keys_map=dict(_TE_NAMES),
        ),
    )


def block_spec(model: ModelConfig, num_local_layers: int) -> ModuleSpec:
    """The decoder block of one pipeline chunk: `num_local_layers` layers and the final norm."""
    if resolve_backend(model) == "te":
        from megatron.core.extensions.transformer_engine import TENorm

        layer, final_norm = _te_layer_spec(), TENorm
    else:
        layer, final_norm = _local_layer_spec(model), WrappedTorchNorm
    return ModuleSpec(
        module=TransformerBlock,
        submodules=TransformerBlockSubmodules(layer_specs=[layer] * num_local_layers, layer_norm=final_norm),
    )


def check_supported(model: ModelConfig, parallel) -> None:
    """Refuse layouts the selected modules cannot run, before anything is allocated."""
    if parallel.sequence_parallel and resolve_backend(model) != "te":
        raise ConfigError(
            "parallel.sequence_parallel",
            "needs a norm that supports sequence parallelism: megatron-core's torch norm does not. "
            "Install Transformer Engine (model.kernels=te) or set parallel.sequence_parallel=false",
        )
