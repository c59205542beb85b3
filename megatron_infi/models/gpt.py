"""The model of every registered architecture on megatron-core, built from a ModelConfig.

All construction goes through `build_model`, so moving from GPTModel (deprecated in megatron-core
0.19) to HybridModel later changes this file only.
"""

from __future__ import annotations

import torch
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.module import Float16Module
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_infi.config.schema import ModelConfig, ParallelConfig, TrainConfig
from megatron_infi.models import architecture
from megatron_infi.models.spec import block_spec, gpt_model_class, gradient_accumulation_fusion, te_fusions


def padded_vocab_size(vocab_size: int, divisible_by: int) -> int:
    """Embedding rows: the vocab rounded up to a multiple of `divisible_by`.

    Unlike Megatron-LM (multiple of divisible_by x TP), the padding does not depend on TP, so one
    checkpoint loads under any TP that divides it (config validation checks that).
    """
    return ((vocab_size + divisible_by - 1) // divisible_by) * divisible_by


def resolve_dtype(precision: str) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]


def transformer_config(model: ModelConfig, parallel: ParallelConfig, dtype: torch.dtype) -> TransformerConfig:
    on_gpu = torch.cuda.is_available()
    recompute = {
        "none": {},
        "selective": dict(recompute_granularity="selective", recompute_modules=["core_attn"]),
        "full": dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1),
    }[model.recompute]
    return TransformerConfig(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups,
        **architecture(model.arch).transformer_config_fields(model),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=model.init_std,
        tensor_model_parallel_size=parallel.tensor,
        pipeline_model_parallel_size=parallel.pipeline,
        virtual_pipeline_model_parallel_size=parallel.virtual_pipeline
        if parallel.virtual_pipeline > 1
        else None,
        sequence_parallel=parallel.sequence_parallel,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        autocast_dtype=dtype,
        # On CPU every tensor is created on the host; on GPU weights are initialised on device.
        use_cpu_initialization=not on_gpu,
        # gloo has no batched p2p; NCCL is faster with it.
        batch_p2p_comm=on_gpu,
        deallocate_pipeline_outputs=on_gpu,
        # wgrad GEMMs accumulate into the fp32 main_grad (kernels/wgrad.py) where supported.
        gradient_accumulation_fusion=gradient_accumulation_fusion(model),
        **te_fusions(model),
        **recompute,
    )


def build_model_chunk(
    cfg: TrainConfig,
    config: TransformerConfig,
    spec: ModuleSpec,
    pre_process: bool,
    post_process: bool,
    vp_stage: int | None = None,
) -> GPTModel:
    model = cfg.model
    llama3 = model.rope_scaling.type == "llama3"
    if llama3 and model.rope_scaling.original_max_position_embeddings != 8192:
        # megatron-core's llama3 scaling hard-codes Meta's original context (8192) and freq factors.
        raise ValueError(
            "model.rope_scaling.original_max_position_embeddings must be 8192 for llama3 scaling"
        )
    # GPTModel, or its subclass with the fused output layer + cross-entropy (models/spec.py).
    return gpt_model_class(model)(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=padded_vocab_size(model.vocab_size, model.make_vocab_size_divisible_by),
        max_sequence_length=model.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=model.tie_embeddings,
        position_embedding_type="rope",
        rotary_base=int(model.rope_theta),
        rope_scaling=llama3,
        rope_scaling_factor=model.rope_scaling.factor if llama3 else 8.0,
        vp_stage=vp_stage,
    )


def build_model(cfg: TrainConfig) -> tuple[list[torch.nn.Module], TransformerConfig]:
    """This rank's model chunks (one per virtual pipeline stage), on the training device."""
    from megatron.core import parallel_state

    dtype = resolve_dtype(cfg.train.precision)
    config = transformer_config(cfg.model, cfg.parallel, dtype)
    vp = cfg.parallel.virtual_pipeline
    chunks = []
    for vp_stage in range(vp) if vp > 1 else [None]:
        spec = block_spec(cfg.model, get_num_layers_to_build(config, vp_stage=vp_stage))
        chunk = build_model_chunk(
            cfg,
            config,
            spec,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
            vp_stage=vp_stage,
        )
        chunks.append(chunk)
    if torch.cuda.is_available():
        for chunk in chunks:
            chunk.cuda(torch.cuda.current_device())
    if config.bf16:
        # Params and activations in bf16; the optimizer keeps fp32 main params.
        chunks = [Float16Module(config, chunk) for chunk in chunks]
    return chunks, config
