"""Image degradations for the demo datasets: the distortion types the real quality
datasets apply (JPEG, JPEG 2000, noise, blur, pink noise, lost blocks, pixelation) and the
camera-side mixture of the 'authentic' ones. Deterministic given the generator."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter, features

HAS_JP2K = features.check("jpg_2000")


def to_img(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    return decode(encode(img, "JPEG", quality=int(quality)))


def jp2k(img: Image.Image, ratio: float) -> Image.Image:
    """JPEG 2000 at compression ratio `ratio`; heavy JPEG where Pillow lacks OpenJPEG."""
    if not HAS_JP2K:
        return jpeg(img, int(np.clip(round(300 / ratio), 2, 50)))
    return decode(encode(img, "JPEG2000", quality_mode="rates", quality_layers=[ratio],
                           irreversible=True))


def noise(img: Image.Image, std: float, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    return to_img(arr + rng.normal(0.0, std, size=arr.shape))


def blur(img: Image.Image, sigma: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(float(sigma))) if sigma > 0 else img


def pink(img: Image.Image, std: float, rng: np.random.Generator) -> Image.Image:
    """Additive 1/f ('pink') noise, the same in every channel, as CSIQ's fnoise."""
    arr = np.asarray(img, dtype=np.float32)
    h, w = arr.shape[:2]
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    f[0, 0] = 1.0
    spectrum = np.fft.rfft2(rng.normal(size=(h, w))) / f
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(h, w))
    field *= std / max(float(field.std()), 1e-6)
    return to_img(arr + field[..., None])


def lost_blocks(img: Image.Image, frac: float, rng: np.random.Generator,
                 block: int = 8) -> Image.Image:
    """Blocks lost in transmission: each replaced by its mean colour plus a little noise."""
    arr = np.asarray(img, dtype=np.float32).copy()
    h, w = arr.shape[:2]
    for y in range(0, h - block + 1, block):
        for x in range(0, w - block + 1, block):
            if rng.random() < frac:
                patch = arr[y:y + block, x:x + block]
                arr[y:y + block, x:x + block] = patch.mean(axis=(0, 1)) + rng.normal(0, 6, 3)
    return to_img(arr)


def pixelate(img: Image.Image, factor: float) -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, round(w / factor)), max(1, round(h / factor))),
                       Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.NEAREST)


def authentic(img: Image.Image, blurriness: float, noisiness: float, rng: np.random.Generator
              ) -> Image.Image:
    """The camera-side part of an 'authentic' picture: defocus / shake, then sensor noise."""
    return noise(blur(img, 2.6 * blurriness), 28.0 * noisiness, rng)


def jpeg_quality(compression: float) -> int:
    return int(round(95 - 85 * compression))
