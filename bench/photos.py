"""Photograph-like JPEGs for the benchmarks: smooth gradients, noise, shapes, camera sizes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = {"500x375": (500, 375), "4000x3000": (4000, 3000)}


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth two-colour gradient with blurred shapes and sensor-like noise, RGB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (x * rng.uniform(-1, 1) / width + y * rng.uniform(-1, 1) / height) % 1.0
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = a + t[..., None] * (b - a)
    img = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.25) * min(width, height)
        box = (cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(1.0, min(width, height) / 300)))
    noise = rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def photo_jpegs(size: str, count: int = 4, seed: int = 0) -> list[bytes]:
    """`count` different JPEG photographs of the named size ("500x375" or "4000x3000")."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    width, height = SIZES[size]
    return [jpeg(photo(width, height, seed + i)) for i in range(count)]
