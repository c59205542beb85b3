"""InfiR-VL on megatron-core: LLaVAModel = CLIP ViT (CLIPViTModel) + MLP projector + our text preset.

The language model is built exactly as the text model is (same TransformerConfig, same layer spec,
so its checkpoint keys under `language_model.` are the text checkpoint's keys); the ViT follows
megatron-core's CLIP recipe (LayerNorm, biases, quick-GELU, a class token, ln_pre) and the projector
is LLaVA-1.5's two-layer MLP with GELU. Tensor parallelism splits all three; the ViT and the
projector use megatron-core's local layer modules on every backend.

`VIT_HF_RULES` maps the ViT and projector to Hugging Face's CLIPVisionModel / LLaVA projector names:
the trainer uses it to start the ViT from an HF CLIP dir, the converter to export.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import torch
import torch.nn.functional as F
from megatron.core.activations import quick_gelu
from megatron.core.models.multimodal.llava_model import LLaVAModel
from megatron.core.models.vision.vit_layer_specs import get_vit_layer_with_local_spec
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.mlp import MLPSubmodules
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_infi.config.schema import TrainConfig
from megatron_infi.config.vision import VisionConfig
from megatron_infi.models.gpt import padded_vocab_size, resolve_dtype, transformer_config
from megatron_infi.models.spec import block_spec


def vision_transformer_config(vision: VisionConfig, language: TransformerConfig) -> TransformerConfig:
    """The ViT's config: CLIP's layer recipe, the language model's parallel layout and dtype."""
    config = TransformerConfig(
        num_layers=vision.num_layers,
        hidden_size=vision.hidden_size,
        ffn_hidden_size=vision.ffn_hidden_size,
        num_attention_heads=vision.num_attention_heads,
        num_query_groups=vision.num_attention_heads,
        kv_channels=vision.hidden_size // vision.num_attention_heads,
        normalization="LayerNorm",
        layernorm_epsilon=vision.norm_eps,
        add_bias_linear=True,
        add_qkv_bias=True,
        gated_linear_unit=False,
        activation_func=quick_gelu,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        attention_softmax_in_fp32=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=language.init_method_std,
        tensor_model_parallel_size=language.tensor_model_parallel_size,
        pipeline_model_parallel_size=1,
        params_dtype=language.params_dtype,
        pipeline_dtype=language.pipeline_dtype,
        bf16=language.bf16,
        autocast_dtype=language.autocast_dtype,
        use_cpu_initialization=language.use_cpu_initialization,
    )
    config.vision_model_type = "clip"
    return config


def projection_config(vision: VisionConfig, language: TransformerConfig) -> TransformerConfig:
    """LLaVA-1.5's projector: Linear(vit -> lm) + GELU + Linear(lm -> lm), with biases."""
    config = dataclasses.replace(
        language,
        ffn_hidden_size=language.hidden_size,
        gated_linear_unit=False,
        activation_func=F.gelu,
        add_bias_linear=True,
        bias_activation_fusion=False,
        gradient_accumulation_fusion=False,
        pipeline_model_parallel_size=1,
        virtual_pipeline_model_parallel_size=None,
    )
    return config


@contextlib.contextmanager
def _clip_layer_norm():
    """LLaVAModel builds CLIPViTModel with its default ln_pre, which without Transformer Engine is
    torch.nn.LayerNorm called with megatron's `config=` keyword (a TypeError in megatron-core 0.19).
    Give it megatron's wrapped torch LayerNorm instead, on every machine, so ViT checkpoints have
    one layout; restored on exit."""
    from megatron.core.models.multimodal import llava_model
    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    original = llava_model.CLIPViTModel
    llava_model.CLIPViTModel = functools.partial(
        original, ln_pre_impl=WrappedTorchNorm, ln_post_impl=WrappedTorchNorm
    )
    try:
        yield
    finally:
        llava_model.CLIPViTModel = original


def build_llava(cfg: TrainConfig, image_token_id: int, config: TransformerConfig | None = None) -> LLaVAModel:
    """The whole VL model of this rank (pipeline=1), on the host (CPU) or the current device."""
    model = cfg.model
    config = config or transformer_config(model, cfg.parallel, resolve_dtype(cfg.train.precision))
    llama3 = model.rope_scaling.type == "llama3"
    with _clip_layer_norm():
        return _llava(cfg, image_token_id, config, llama3)


def _llava(cfg: TrainConfig, image_token_id: int, config: TransformerConfig, llama3: bool) -> LLaVAModel:
    model, vision = cfg.model, cfg.vision
    return LLaVAModel(
        language_transformer_config=config,
        language_transformer_layer_spec=block_spec(model, model.num_layers),
        language_vocab_size=padded_vocab_size(model.vocab_size, model.make_vocab_size_divisible_by),
        language_max_sequence_length=cfg.data.seq_length,
        vision_transformer_config=vision_transformer_config(vision, config),
        vision_transformer_layer_spec=get_vit_layer_with_local_spec(),
        drop_vision_class_token=vision.drop_class_token,
        vision_projection_config=projection_config(vision, config),
        vision_projection_layer_spec=MLPSubmodules(
            linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear
        ),
        vision_projection_type="mlp",
        parallel_output=True,
        share_embeddings_and_output_weights=model.tie_embeddings,
        language_position_embedding_type="rope",
        language_rotary_base=int(model.rope_theta),
        language_rope_scaling=llama3,
        language_rope_scaling_factor=model.rope_scaling.factor if llama3 else 8.0,
        img_h=vision.image_size,
        img_w=vision.image_size,
        patch_dim=vision.patch_size,
        image_token_index=image_token_id,
    )


def build_model(cfg: TrainConfig, image_token_id: int) -> tuple[list[torch.nn.Module], TransformerConfig]:
    """([the model], language TransformerConfig), frozen parts per `vision.freeze_*` (the trainer
    wraps only what trains in DDP and the optimizer)."""
    from megatron.core.transformer.module import Float16Module

    config = transformer_config(cfg.model, cfg.parallel, resolve_dtype(cfg.train.precision))
    model = build_llava(cfg, image_token_id, config)
    from megatron.core.transformer.enums import ModelType

    # The schedules read it; LLaVAModel (unlike GPTModel) does not set it.
    model.model_type = ModelType.encoder_or_decoder
    vision = cfg.vision
    model.freeze(
        freeze_language_model=vision.freeze_language_model,
        freeze_vision_model=vision.freeze_vision_model,
        freeze_vision_projection=vision.freeze_projection,
    )
    if torch.cuda.is_available():
        model.cuda(torch.cuda.current_device())
    chunks: list[torch.nn.Module] = [model]
    if config.bf16:
        chunks = [Float16Module(config, model)]
    return chunks, config


# ----------------------------------------------------------------------------- HF names
# (megatron-core name inside the ViT / projector, HF name, kind). `{i}` is the layer; names are the
# module's local state-dict names (per layer, unstacked); kinds: copy, qkv (fused per head), cls.
_VIT = "vision_tower."
_LAYER = _VIT + "encoder.layers.{i}."
VIT_HF_RULES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("vision_model.conv1.weight", (_VIT + "embeddings.patch_embedding.weight",), "copy"),
    ("vision_model.class_token", (_VIT + "embeddings.class_embedding",), "cls"),
    ("vision_model.position_embeddings.weight", (_VIT + "embeddings.position_embedding.weight",), "copy"),
    ("vision_model.ln_pre.weight", (_VIT + "pre_layrnorm.weight",), "copy"),
    ("vision_model.ln_pre.bias", (_VIT + "pre_layrnorm.bias",), "copy"),
    *(
        (f"vision_model.decoder.layers.{{i}}.{mc}.{p}", tuple(_LAYER + h.format(p=p) for h in hf), kind)
        for mc, hf, kind in (
            ("input_layernorm", ("layer_norm1.{p}",), "copy"),
            (
                "self_attention.linear_qkv",
                ("self_attn.q_proj.{p}", "self_attn.k_proj.{p}", "self_attn.v_proj.{p}"),
                "qkv",
            ),
            ("self_attention.linear_proj", ("self_attn.out_proj.{p}",), "copy"),
            ("pre_mlp_layernorm", ("layer_norm2.{p}",), "copy"),
            ("mlp.linear_fc1", ("mlp.fc1.{p}",), "copy"),
            ("mlp.linear_fc2", ("mlp.fc2.{p}",), "copy"),
        )
        for p in ("weight", "bias")
    ),
    ("vision_projection.encoder.linear_fc1.weight", ("multi_modal_projector.linear_1.weight",), "copy"),
    ("vision_projection.encoder.linear_fc1.bias", ("multi_modal_projector.linear_1.bias",), "copy"),
    ("vision_projection.encoder.linear_fc2.weight", ("multi_modal_projector.linear_2.weight",), "copy"),
    ("vision_projection.encoder.linear_fc2.bias", ("multi_modal_projector.linear_2.bias",), "copy"),
)


def vit_rules(vision: VisionConfig) -> list[tuple[str, list[str], str]]:
    """VIT_HF_RULES expanded over the ViT's layers."""
    rules = []
    for mcore, hf, kind in VIT_HF_RULES:
        layers = range(vision.num_layers) if "{i}" in mcore else [None]
        for i in layers:
            rules.append((mcore.format(i=i), [h.format(i=i) for h in hf], kind))
    return rules


def vit_to_hf(kind: str, tensor: torch.Tensor, vision: VisionConfig) -> list[torch.Tensor]:
    """One full (TP-gathered) megatron-core tensor -> its HF tensors."""
    if kind == "cls":
        return [tensor.reshape(-1)]
    if kind == "qkv":
        heads, head_dim = vision.num_attention_heads, vision.hidden_size // vision.num_attention_heads
        grouped = tensor.reshape(heads, 3, head_dim, *tensor.shape[1:])
        return [grouped[:, j].reshape(-1, *tensor.shape[1:]).contiguous() for j in range(3)]
    return [tensor]


def vit_from_hf(kind: str, tensors: list[torch.Tensor], vision: VisionConfig) -> torch.Tensor:
    """Inverse of `vit_to_hf`."""
    if kind == "cls":
        return tensors[0].reshape(1, 1, -1)
    if kind == "qkv":
        heads = vision.num_attention_heads
        rest = tensors[0].shape[1:]
        return torch.stack([t.reshape(heads, -1, *rest) for t in tensors], dim=1).reshape(-1, *rest)
    return tensors[0]
