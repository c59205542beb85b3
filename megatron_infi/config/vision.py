"""The vision half of a VL model (InfiR-VL): a CLIP-class ViT and an MLP projector on a text preset.

A TrainConfig with a `vision:` section trains megatron-core's LLaVAModel (the ViT + projector + the
`model:` language model); without one, the text model. Stage switches (which parts train) and the
weights each part starts from are fields here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from megatron_infi.config.core import ConfigError

VIT_PRESETS: dict[str, dict] = {
    # OpenAI CLIP ViT-L/14 at 336 px (LLaVA-1.5's encoder): 24 layers, 304M parameters.
    "clip-vit-l-14-336": dict(
        num_layers=24,
        hidden_size=1024,
        ffn_hidden_size=4096,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
    ),
    # A CPU-sized ViT: 2 layers, hidden 64, 32x32 images in 8x8 patches (16 patches + class token);
    # the shape of the small CLIP the data pipeline trains (data_processing/vision/similarity.py).
    "tiny-vit": dict(
        num_layers=2, hidden_size=64, ffn_hidden_size=256, num_attention_heads=4, image_size=32, patch_size=8
    ),
}


@dataclass
class VisionConfig:
    preset: str = "tiny-vit"
    num_layers: int = 2
    hidden_size: int = 64
    ffn_hidden_size: int = 256
    num_attention_heads: int = 4
    image_size: int = 32
    patch_size: int = 8
    norm_eps: float = 1e-5
    # LLaVA's "default" feature selection: the class token is dropped before the projector.
    drop_class_token: bool = True
    # The tokenizer's token that stands for the image in the text (one per record).
    image_token: str = "<|image|>"
    # Which parts train: stage 1 (alignment) trains the projector only.
    freeze_language_model: bool = False
    freeze_vision_model: bool = False
    freeze_projection: bool = False
    # Weights at a fresh start (no checkpoint in run_dir and no checkpoint.load): the language model
    # from a text checkpoint root (pretrain/anneal or `infi convert from-hf` output), the ViT from a
    # Hugging Face CLIPVisionModel / CLIPModel dir. Unset parts start from random init.
    language_model_load: str | None = None
    vision_model_load: str | None = None

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def image_tokens(self) -> int:
        """Positions one image takes in the language model's sequence."""
        return self.num_patches + (0 if self.drop_class_token else 1)

    def validate(self) -> None:
        if self.preset not in VIT_PRESETS:
            raise ConfigError(
                "preset", f"unknown ViT preset {self.preset!r} (known: {', '.join(sorted(VIT_PRESETS))})"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                "image_size", f"{self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                "hidden_size",
                f"{self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}",
            )
        if self.freeze_language_model and self.freeze_vision_model and self.freeze_projection:
            raise ConfigError("freeze_projection", "every part is frozen: nothing would train")


def expand_vision_preset(data: dict) -> dict:
    """`vision.preset` -> its fields; fields given next to it win."""
    vision = data.get("vision")
    if not isinstance(vision, dict):
        return data
    name = vision.get("preset", VisionConfig.preset)
    if name not in VIT_PRESETS:
        raise ConfigError(
            "vision.preset", f"unknown ViT preset {name!r} (known: {', '.join(sorted(VIT_PRESETS))})"
        )
    data = copy.deepcopy(data)
    data["vision"] = {**VIT_PRESETS[name], **vision, "preset": name}
    return data
