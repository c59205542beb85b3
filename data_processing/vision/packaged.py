"""Real image-text pairs from files that ship inside installed PyPI packages (no downloads): the
photographs and drawings in matplotlib's sample data and scikit-learn's images, each with a
hand-written caption, and scikit-learn's handwritten digits (1,797 8x8 scans) with their labels.

Enough for a toy run: `write_sources` writes them as image files plus a JSONL of
`{"image": relative path, "text": caption}` records, the format `ImageTextReader` reads. Crops of
the photographs add pairs whose images differ (a resized copy would be a near-duplicate, which the
dedup step is there to drop: `resized_copies` adds a few of those on purpose).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# (package, path inside it, caption): captions describe what each picture shows.
PHOTOS = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "a portrait photo of a woman in a navy uniform"),
    (
        "matplotlib",
        "mpl-data/sample_data/Minduka_Present_Blue_Pack.png",
        "a blue gift box tied with a silver ribbon",
    ),
    ("matplotlib", "mpl-data/sample_data/logo2.png", "the word matplotlib written on a dark blue background"),
    ("sklearn", "datasets/images/china.jpg", "a chinese pagoda on a hill above a lake"),
    ("sklearn", "datasets/images/flower.jpg", "an orange dahlia flower among green leaves"),
)
CROPS = (("left", (0.0, 0.0, 0.6, 1.0)), ("right", (0.4, 0.0, 1.0, 1.0)), ("top", (0.0, 0.0, 1.0, 0.6)))


def _package_file(package: str, relpath: str) -> Path:
    from megatron_infi.assets import package_file

    return package_file(package, relpath)


def photo_pairs() -> list[tuple[Image.Image, str, str]]:
    """(image, caption, name) for each packaged photo and its crops."""
    pairs = []
    for package, relpath, caption in PHOTOS:
        path = _package_file(package, relpath)
        with Image.open(path) as image:
            image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image).convert("RGB")
        stem = path.stem.lower()
        pairs.append((image, caption, stem))
        for side, (x0, y0, x1, y1) in CROPS:
            w, h = image.size
            crop = image.crop((int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h)))
            pairs.append((crop, f"the {side} part of {caption}", f"{stem}_{side}"))
    return pairs


def digit_pairs(limit: int | None = None, scale: int = 4) -> list[tuple[Image.Image, str, str]]:
    """scikit-learn's handwritten digits, upscaled `scale` times, captioned with their label."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    count = len(digits.images) if limit is None else min(limit, len(digits.images))
    pairs = []
    for i in range(count):
        pixels = (digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
        pairs.append((image.convert("RGB"), f"a handwritten digit {digits.target[i]}", f"digit_{i:04d}"))
    return pairs


def write_sources(out_dir: str | Path, digits: int = 300, resized_copies: int = 2) -> Path:
    """Write the packaged pairs as PNGs + `pairs.jsonl` under `out_dir`; returns the JSONL path."""
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    records = []
    pairs = photo_pairs() + digit_pairs(digits)
    for image, caption, name in pairs:
        image.save(images_dir / f"{name}.png")
        records.append({"id": name, "image": f"images/{name}.png", "text": caption})
    for image, caption, name in photo_pairs()[:resized_copies]:
        resized = image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
        resized.save(images_dir / f"{name}_half.jpg", quality=90)
        records.append({"id": f"{name}_half", "image": f"images/{name}_half.jpg", "text": caption})
    path = out_dir / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
