"""Which modules make up a transformer layer: the selection point between Transformer Engine,
our Triton kernels and their torch references. The layer's structure (pre-norm, GQA self-attention
with fused QKV, SwiGLU MLP, and the architecture's q/k norms where it has them) is the same
whichever is chosen, and checkpoints use Transformer Engine's parameter names in every case, so they
load across backends.

Backends (`model.kernels`):
- `te`: megatron-core's Transformer Engine spec (fused norm + linear, TE attention), with TE's and
  megatron-core's fusions on (`te_fusions`, `gradient_accumulation_fusion`).
- `triton`: kernels/ — RMSNorm, SwiGLU, RoPE and the fused output layer + cross-entropy in Triton.
- `torch`: the same modules with torch reference ops (RMSNorm via torch's rms_norm, megatron's
  unfused SwiGLU and RoPE, the chunked linear + cross-entropy in torch). CPU always runs this.
`auto` picks te, then triton (CUDA), then torch. Both local backends use our RMSNorm, which marks
its weight for megatron-core's sequence-parallel grad all-reduce, so sequence parallelism works
with all three.
"""

from __future__ import annotations

import functools
import os

import torch
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.models.gpt import GPTModel
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlock, TransformerBlockSubmodules
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

from megatron_infi.config.core import ConfigError
from megatron_infi.config.schema import ModelConfig
from megatron_infi.kernels._triton import triton_importable
from megatron_infi.kernels.attention import (
    resolve_attention,
    select_core_attention,
    transformer_engine_available,
)
from megatron_infi.kernels.output_layer import FusedLossGPTModel
from megatron_infi.kernels.rmsnorm import RMSNorm
from megatron_infi.kernels.rope import FusedRopeSelfAttention
from megatron_infi.kernels.swiglu import SwiGLUMLP
from megatron_infi.models import architecture

# Local-spec names -> the TE-spec names (TE fuses the pre-norms into the following linear).
_TE_NAMES = {
    "input_layernorm.": "self_attention.linear_qkv.layer_norm_",
    "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_",
}


def _triton_interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def resolve_backend(model: ModelConfig) -> str:
    """'te', 'triton' or 'torch' for `model.kernels` on this machine; raises ConfigError naming
    `model.kernels` when the requested backend cannot run here."""
    on_gpu = torch.cuda.is_available()
    if model.kernels == "te":
        if not transformer_engine_available():
            raise ConfigError("model.kernels", "te needs Transformer Engine installed and a CUDA device")
        return "te"
    if model.kernels == "triton":
        if not triton_importable():
            raise ConfigError("model.kernels", "triton is not installed")
        if not on_gpu and not _triton_interpreter_requested():
            raise ConfigError(
                "model.kernels",
                "triton needs a CUDA device; on CPU use model.kernels=torch (or set TRITON_INTERPRET=1 "
                "to run the kernels in Triton's interpreter, for testing only: it is very slow)",
            )
        return "triton"
    if model.kernels == "torch":
        return "torch"
    if transformer_engine_available():
        return "te"
    return "triton" if on_gpu and triton_importable() else "torch"


def _te_layer_spec(model: ModelConfig) -> ModuleSpec:
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

    return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=architecture(model.arch).qk_norm)


def _norm(backend: str):
    return functools.partial(RMSNorm, impl="triton" if backend == "triton" else "torch")


def _local_layer_spec(model: ModelConfig, backend: str) -> ModuleSpec:
    triton = backend == "triton"
    norm = _norm(backend)
    mlp_class = SwiGLUMLP if triton else MLP
    # Over each head's [.., head_dim] queries and keys, before RoPE (megatron-core applies them in
    # get_query_key_value_tensors, which FusedRopeSelfAttention rotates after).
    qk_norm = norm if architecture(model.arch).qk_norm else IdentityOp
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=norm,
            self_attention=ModuleSpec(
                module=FusedRopeSelfAttention if triton else SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=ColumnParallelLinear,
                    core_attention=select_core_attention(model.attention),
                    linear_proj=RowParallelLinear,
                    q_layernorm=qk_norm,
                    k_layernorm=qk_norm,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=norm,
            mlp=functools.partial(
                mlp_class.as_mlp_submodule,
                submodules=MLPSubmodules(linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear),
            ),
            mlp_bda=get_bias_dropout_add,
            sharded_state_dict_keys_map=dict(_TE_NAMES),
        ),
    )


def block_spec(model: ModelConfig, num_local_layers: int) -> ModuleSpec:
    """The decoder block of one pipeline chunk: `num_local_layers` layers and the final norm."""
    backend = resolve_backend(model)
    if backend == "te":
        from megatron.core.extensions.transformer_engine import TENorm

        layer, final_norm = _te_layer_spec(model), TENorm
    else:
        layer, final_norm = _local_layer_spec(model, backend), _norm(backend)
    return ModuleSpec(
        module=TransformerBlock,
        submodules=TransformerBlockSubmodules(layer_specs=[layer] * num_local_layers, layer_norm=final_norm),
    )


def gpt_model_class(model: ModelConfig):
    """The GPTModel constructor: the local backends compute the training loss with the fused
    output layer + cross-entropy (Triton or torch); TE keeps megatron-core's logits path."""
    backend = resolve_backend(model)
    if backend == "te":
        return GPTModel
    return functools.partial(FusedLossGPTModel, cross_entropy_impl=backend)


# Off: the benchmark's ablation of the fused weight-gradient accumulation (benchmarks/kernels_model.py).
WGRAD_FUSION = True


def gradient_accumulation_fusion(model: ModelConfig) -> bool:
    """Whether linear layers accumulate weight gradients inside the wgrad GEMM into the fp32
    main_grad (megatron-core's `gradient_accumulation_fusion`): with kernels=triton or te on a GPU
    where megatron-core has the GEMM, apex's or kernels/wgrad.py's (installed by training/patches.py).
    TE's linears fuse it themselves; the output layer (megatron-core's own linear) needs the GEMM.
    Reads state only: it patches nothing."""
    if not WGRAD_FUSION or not torch.cuda.is_available() or resolve_backend(model) not in ("triton", "te"):
        return False
    from megatron.core.tensor_parallel import layers

    return layers._grad_accum_fusion_available


def te_fusions(model: ModelConfig) -> dict:
    """TransformerConfig fusion fields for kernels=te, as Megatron-LM's recipes run Transformer
    Engine: TE's fused RoPE, megatron-core's fused bias-SwiGLU, and its fused vocab-parallel
    cross-entropy ('native': megatron-core warns that TE's has known stability issues). The local
    backends fuse these ops in kernels/ instead, so they get none of them."""
    if resolve_backend(model) != "te":
        return {}
    return dict(
        apply_rope_fusion=True,
        bias_activation_fusion=True,
        cross_entropy_loss_fusion=True,
        cross_entropy_fusion_impl="native",
    )


def check_supported(model: ModelConfig, parallel) -> None:
    """Refuse what the selected modules cannot run, before anything is allocated."""
    resolve_backend(model)
    try:
        resolve_attention(model.attention)
    except ValueError as err:
        raise ConfigError("model.attention", str(err)) from None
