"""Decoding and the 256x256 preprocessing shared by training and the service."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from core.imaging import load_256, open_rgb, resize_center


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (256, 256), (100, 60), (1200, 300)])
def test_resize_center_agrees_with_torchvision_resize_then_center_crop(
    size: tuple[int, int],
) -> None:
    img = _gradient(*size)
    ours = resize_center(img)
    assert ours.shape == (256, 256, 3) and ours.dtype == np.uint8
    reference = TF.center_crop(TF.resize(TF.pil_to_tensor(img), 256, antialias=True), [256, 256])
    diff = np.abs(ours.astype(int) - reference.permute(1, 2, 0).numpy().astype(int))
    assert diff.mean() < 2.0  # same geometry; resampling order differs by rounding only


def test_resize_center_keeps_the_centre_of_a_wide_image() -> None:
    img = Image.new("RGB", (900, 300), (255, 0, 0))
    img.paste((0, 0, 255), (300, 0, 600, 300))  # the central third is blue
    out = resize_center(img)
    assert np.all(out[:, 10:-10] == [0, 0, 255])


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (400, 200), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 200, 200))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(img, "JPEG", exif=exif.tobytes(), quality=95)
    shown = open_rgb(data)
    assert shown.size == (200, 400)
    arr = np.asarray(shown).mean(-1)
    assert arr[:200].mean() > 200 and arr[200:].mean() < 50  # the white half is now on top


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "I;16", "P", "1", "I", "F"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    base = _gradient(64, 48)
    img = base.convert(mode) if mode not in ("I;16", "I", "F") else base.convert("L").convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I", "F") else "PNG"
    if mode == "I;16":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        assert img.mode == "I;16"
    out = open_rgb(_encode(img, fmt))
    assert out.mode == "RGB" and out.size == (64, 48)
    if mode in ("L", "I;16"):  # the full 16-bit range is scaled, not clipped to white
        gray = np.asarray(out)[..., 0].astype(int)
        np.testing.assert_allclose(gray, np.asarray(base.convert("L")), atol=1)


def test_transparent_palette_is_composited_on_white() -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.putpixel((5, 5), 1)
    out = np.asarray(open_rgb(_encode(img, "PNG", transparency=0)))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[5, 5]) == (255, 0, 0)


def test_large_jpeg_decodes_in_draft_mode_to_nearly_the_same_input() -> None:
    big = _gradient(4000, 3000)
    data = _encode(big, "JPEG", quality=90)
    draft = load_256(data)
    full = resize_center(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.abs(draft.astype(int) - full.astype(int)).mean() < 2.0
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (341, 256))
        assert min(img.size) >= 256 and img.size[0] < 4000  # it did decode at reduced scale


def test_garbage_raises() -> None:
    with pytest.raises(OSError):
        load_256(b"this is not an image")
    truncated = _encode(_gradient(300, 300), "PNG")[:200]
    with pytest.raises(OSError):
        load_256(truncated)


def test_load_256_returns_writable_uint8_hwc() -> None:
    out = load_256(_encode(_gradient(300, 200), "PNG"))
    assert out.shape == (256, 256, 3) and out.flags.writeable
    torch.from_numpy(out)  # no read-only warning path
