"""Text rendering (InfiR-VL's second stage): real text from the corpus drawn into images with real
fonts, paired with the text it shows, so the model learns to read what it would otherwise be told.

The fonts are the DejaVu / STIX TrueType files matplotlib ships (`mpl-data/fonts/ttf`); code is set
in a monospaced face, prose in a proportional one. Lines wrap at the image width (measured with the
font, not by character count); text that does not fit is cut at a line boundary and the record keeps
exactly the text that is visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONTS = {
    "sans": "DejaVuSans.ttf",
    "serif": "DejaVuSerif.ttf",
    "mono": "DejaVuSansMono.ttf",
}


def font_path(family: str) -> Path:
    import matplotlib

    if family not in FONTS:
        raise ValueError(f"font family {family!r} is not one of {sorted(FONTS)}")
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONTS[family]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: matplotlib's bundled font is missing (reinstall matplotlib)")
    return path


@lru_cache(maxsize=32)
def _font(family: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(family)), size)


@dataclass(frozen=True)
class RenderStyle:
    width: int = 448
    height: int = 448
    font_size: int = 18
    family: str = "sans"
    margin: int = 12
    line_spacing: float = 1.25
    foreground: tuple[int, int, int] = (20, 20, 20)
    background: tuple[int, int, int] = (250, 250, 246)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int, keep_indent: bool) -> list[str]:
    """Lines no wider than `width` pixels; source line breaks (and, for code, indentation) are
    kept; a word wider than a line is split."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        paragraph = paragraph.expandtabs(4)
        indent = paragraph[: len(paragraph) - len(paragraph.lstrip(" "))] if keep_indent else ""
        current = indent
        for word in paragraph.split():
            candidate = f"{current} {word}" if current.strip() else current + word
            if font.getlength(candidate) <= width:
                current = candidate
                continue
            if current.strip():
                lines.append(current)
            while font.getlength(word) > width:
                cut = max(1, int(len(word) * width / font.getlength(word)))
                lines.append(word[:cut])
                word = word[cut:]
            current = word
        lines.append(current)
    return lines


def render_text(text: str, style: RenderStyle = RenderStyle()) -> tuple[Image.Image, str]:
    """(image, visible text): the text drawn top-left to bottom-right, cut at the last full line."""
    font = _font(style.family, style.font_size)
    inner = style.width - 2 * style.margin
    lines = _wrap(text, font, inner, keep_indent=style.family == "mono")
    step = round(style.font_size * style.line_spacing)
    fits = max(1, (style.height - 2 * style.margin) // step)
    visible = lines[:fits]
    image = Image.new("RGB", (style.width, style.height), style.background)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(visible):
        draw.text((style.margin, style.margin + i * step), line, font=font, fill=style.foreground)
    return image, "\n".join(visible).strip()
