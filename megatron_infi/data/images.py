"""Opening untrusted images safely, the one preprocessing every VL stage shares, and perceptual hashes.

`open_checked` is the gate every image passes before it is used: it names why a file is refused
(`BadImage.reason`: missing_file, not_an_image, truncated, unsupported_mode, too_large, too_small)
so the pipeline can quarantine it with that reason. The size limit is checked from the header,
before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Modes that convert to RGB without losing what the image shows. 16-bit / float / multi-band
# scientific modes (I, I;16, F, ...) need a value mapping we cannot guess: refused.
CONVERTIBLE_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr"})


class BadImage(ValueError):
    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 36_000_000  # width x height, from the header
    min_side: int = 8


def open_checked(path: str | Path, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """The image at `path` as a fully decoded RGB image, or BadImage naming the reason."""
    path = Path(path)
    if not path.is_file():
        raise BadImage("missing_file", f"{path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                width, height, mode = probe.width, probe.height, probe.mode
                if width * height > limits.max_pixels:
                    raise BadImage("too_large", f"{width}x{height} exceeds {limits.max_pixels} pixels")
                probe.verify()  # structure and checksums (PNG CRCs) without decoding
            image = Image.open(path)
            image.load()  # decodes every pixel: a truncated file fails here
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage("too_large", str(err)) from None
    except Image.UnidentifiedImageError:
        raise BadImage("not_an_image", f"{path.name}: PIL cannot identify the format") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImage("truncated", f"{path.name}: {err}") from None
    if mode not in CONVERTIBLE_MODES:
        raise BadImage("unsupported_mode", f"mode {mode} has no faithful RGB conversion")
    if min(width, height) < limits.min_side:
        raise BadImage("too_small", f"{width}x{height} is under {limits.min_side} pixels on a side")
    if mode in ("RGBA", "LA", "PA", "P"):
        # Transparent pixels over white, as a viewer shows them (not over black, which RGB-convert gives).
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# CLIP's normalisation constants: the ViT and the HF image processor of the export use the same.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_pixels(image: Image.Image, size: int) -> np.ndarray:
    """RGB image -> float32 [3, size, size]: shorter side resized to `size` (bicubic), centre crop,
    scaled to [0, 1] and normalised with CLIP's mean/std. Equal to transformers' CLIPImageProcessor
    with shortest_edge=crop=size (the HF export writes that processor)."""
    width, height = image.size
    short = min(width, height)
    # The longer side as HF computes it (truncated, not rounded): a 512x600 image -> 32x37.
    resized = image.resize(
        (max(size, int(size * width / short)), max(size, int(size * height / short))),
        Image.Resampling.BICUBIC,
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    array = np.asarray(cropped, dtype=np.float32) / 255.0
    array = (array - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def dhash(image: Image.Image, size: int = 8) -> int:
    """Difference hash (size*size bits): robust to resizing and re-encoding, changed by crops."""
    gray = image.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(gray, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
