"""Opening an image as upright RGB, and the native-resolution resize geometry."""

from __future__ import annotations

import math

from PIL import Image, ImageOps


def load_rgb(path: str, short_side: int | None = None) -> Image.Image:
    """Open an image as RGB: EXIF rotation applied, greyscale/CMYK/RGBA converted.

    With `short_side`, a JPEG whose short side is at least twice that is decoded
    at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), never below `short_side`:
    several times faster, and the resize that follows barely differs.
    """
    with Image.open(path) as img:
        if short_side and img.format == "JPEG":
            w, h = img.size
            k = short_side / min(w, h)
            if k <= 0.5:
                img.draft("RGB", (math.ceil(w * k), math.ceil(h * k)))
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB")


def adaptive_size(width: int, height: int, n: int) -> tuple[int, int]:
    """BIQA_CL's AdaptiveResize(n): short side to n only when both sides exceed n."""
    if not n or width <= n or height <= n:
        return width, height
    k = n / min(width, height)
    return (n, round(height * k)) if width <= height else (round(width * k), n)


def at_least(width: int, height: int, size: int) -> tuple[int, int]:
    """Upscaled just enough that a crop of `size` fits (unchanged if it already does)."""
    short = min(width, height)
    if short >= size:
        return width, height
    k = size / short
    return max(size, round(width * k)), max(size, round(height * k))


class NativeResize:
    """PIL image -> adaptive resize, then (for crops) at least `size` on the short side."""

    def __init__(self, adaptive: int = 0, size: int = 0):
        self.adaptive, self.size = adaptive, size

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = adaptive_size(*img.size, self.adaptive)
        if self.size:
            w, h = at_least(w, h, self.size)
        return img if (w, h) == img.size else img.resize((w, h), Image.Resampling.BICUBIC)
