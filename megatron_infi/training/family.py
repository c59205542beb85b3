"""Model families: the one place the trainer asks what to build, what data to read and how one
micro-batch runs. `text` is the GPT model on indexed datasets; `llava` (a config with a `vision:`
section) is megatron-core's LLaVAModel on conversation JSONL with images. Everything else in the
trainer (parallel layout, DDP, optimizer, schedule, checkpoints, resume, signals) is shared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from megatron_infi.config.schema import TrainConfig

log = logging.getLogger("megatron_infi")


@dataclass(frozen=True)
class Family:
    name: str
    preflight_data: Callable  # cfg -> tokenizer (raises ConfigError / DataError)
    build_model: Callable  # (cfg, tokenizer) -> (chunks, TransformerConfig)
    build_datasets: Callable  # (cfg, tokenizer, dp) -> (train, valid)
    # (loss_func) -> forward_step(data_iterator, model); None: the trainer's text step.
    forward_step: Callable | None = None
    # (cfg, model chunks, optimizer) at a fresh start: weights of parts from elsewhere.
    init_weights: Callable | None = None


def select(cfg: TrainConfig) -> Family:
    from megatron_infi.data import gpt_data

    if cfg.vision is None:
        from megatron_infi.models.gpt import build_model

        return Family("text", _text_preflight, lambda c, tok: build_model(c), gpt_data.build_datasets)
    from megatron_infi.data import vl_data

    return Family(
        "llava",
        vl_data.preflight_data,
        _build_llava,
        vl_data.build_datasets,
        forward_step=_llava_forward_step,
        init_weights=_llava_init_weights,
    )


def _text_preflight(cfg: TrainConfig):
    from megatron_infi.data import gpt_data

    tokenizer = gpt_data.preflight_data(cfg)
    gpt_data.verify_data(cfg, tokenizer.vocab_size)
    return tokenizer


def _build_llava(cfg: TrainConfig, tokenizer):
    from megatron_infi.data.vl_data import image_token_id
    from megatron_infi.models.llava import build_model

    return build_model(cfg, image_token_id(tokenizer, cfg.vision.image_token))


def _llava_forward_step(loss_func):
    from megatron_infi.training.distributed import device

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        dev = device()
        output, loss_mask = model(
            batch["images"].to(dev, non_blocking=True),
            batch["tokens"].to(dev, non_blocking=True),
            batch["position_ids"].to(dev, non_blocking=True),
            None,
            labels=batch["labels"].to(dev, non_blocking=True),
            loss_mask=batch["loss_mask"].to(dev, non_blocking=True),
        )
        # The model returns the loss mask over the combined (image + text) sequence.
        return output, partial(loss_func, loss_mask)

    return forward_step


def _llava_init_weights(cfg: TrainConfig, model: list, optimizer) -> None:
    from megatron.core.utils import unwrap_model

    (llava,) = unwrap_model(model)
    vision = cfg.vision
    if vision.language_model_load:
        load_language_model(llava, vision.language_model_load)
        log.info(f"language model initialised from {vision.language_model_load}")
    if vision.vision_model_load:
        load_hf_vision_model(llava, vision, vision.vision_model_load)
        log.info(f"vision model initialised from {vision.vision_model_load}")
    if vision.language_model_load or vision.vision_model_load:
        optimizer.reload_model_params()


def load_language_model(llava, load: str) -> None:
    """The text checkpoint's model (any TP/PP layout it was saved with) into `llava.language_model`:
    the language model's own keys are the text model's keys."""
    from megatron.core import dist_checkpointing

    from megatron_infi.training.checkpoint import CheckpointError, resolve_checkpoint_dir

    path, _ = resolve_checkpoint_dir(load)
    sd = {"model": llava.language_model.sharded_state_dict()}
    try:
        loaded = dist_checkpointing.load(sd, str(path))
    except Exception as err:  # megatron-core / DCP raise many types: name the checkpoint
        raise CheckpointError(
            f"{path}: failed to load the language model ({type(err).__name__}: {err})"
        ) from err
    llava.language_model.load_state_dict(loaded["model"], strict=True)


def load_hf_vision_model(llava, vision, hf_dir: str) -> None:
    """ViT weights from an HF CLIPVisionModel / CLIPModel dir, split for this tensor-parallel rank."""

    from megatron.core import parallel_state as ps
    from safetensors.torch import load_file

    from megatron_infi.models.llava import vit_from_hf, vit_rules
    from megatron_infi.training.checkpoint import CheckpointError

    files = sorted(Path(hf_dir).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{hf_dir}: no *.safetensors (not a Hugging Face CLIP dir)")
    tensors = {}
    for file in files:
        for key, tensor in load_file(str(file)).items():
            # A LLaVA export nests the tower as `model.vision_tower.`, a CLIPModel as `vision_model.`,
            # a CLIPVisionModel has no prefix: key them all by the name inside the tower.
            for prefix in ("model.vision_tower.", "vision_model."):
                key = key.removeprefix(prefix)
            tensors[key] = tensor
    params = dict(llava.named_parameters())
    tp, rank = ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank()
    for mcore, hf_names, kind in vit_rules(vision):
        if not mcore.startswith("vision_model."):
            continue
        names = [n.removeprefix("vision_tower.") for n in hf_names]  # the name inside the tower
        missing = [n for n in names if n not in tensors]
        if missing:
            raise CheckpointError(
                f"{hf_dir}: no tensor {missing[0]} (is it a CLIP vision model of this shape?)"
            )
        full = vit_from_hf(kind, [tensors[n] for n in names], vision)
        param = params[mcore]
        if getattr(param, "tensor_model_parallel", False):
            full = torch.chunk(full, tp, dim=param.partition_dim)[rank]
        if tuple(full.shape) != tuple(param.shape):
            raise CheckpointError(
                f"{hf_dir}: {names[0]} gives {tuple(full.shape)} for {mcore} {tuple(param.shape)}"
            )
        with torch.no_grad():
            param.copy_(full.to(param.dtype))
