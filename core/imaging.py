"""Decode an image and bring it to the network's 256x256 input, without torch.

This is the one definition of the paper's preprocessing ("rescale the shorter side to
256, take the central 256x256 patch"), shared by training, evaluation and the service
(which installs no torch), so the pixels the network sees cannot drift between them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from core.constants import ACCEPTED_FORMATS, IMAGE_SIZE

# The file suffixes of the accepted formats, as Pillow registers them (.jpg, .jpeg, .jfif,
# .jpe, .png, .apng, .gif, .webp, .bmp, .tif, .tiff, .mpo): what `find_images` looks for.
IMAGE_SUFFIXES = frozenset(
    suffix for suffix, fmt in Image.registered_extensions().items() if fmt in ACCEPTED_FORMATS
)


class UnsupportedFormatError(ValueError):
    """A readable image in a format the service does not accept (so training does not either)."""


def is_image_file(path: str | Path) -> bool:
    """True for a file name with the suffix of an accepted format (`IMAGE_SUFFIXES`)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def check_format(img: Image.Image) -> None:
    """Refuse an opened image whose format the service does not accept.

    Raises:
        UnsupportedFormatError: naming the format and the accepted ones.
    """
    if img.format not in ACCEPTED_FORMATS:
        raise UnsupportedFormatError(
            f"{img.format or 'this'} images are not accepted (the service and training read "
            f"{', '.join(sorted(ACCEPTED_FORMATS))})"
        )


def find_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted.

    Raises:
        FileNotFoundError: `folder` is not a folder.
        ValueError: it holds no image file.
    """
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p))
    if not paths:
        raise ValueError(
            f"no images under {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return paths


def open_rgb(
    source: str | Path | bytes | io.BytesIO, *, draft_size: int = IMAGE_SIZE
) -> Image.Image:
    """Open an image of an accepted format as RGB with its EXIF orientation applied (an
    animation's first frame).

    Args:
        source: a path, the encoded bytes, or a binary file object.
        draft_size: the smallest shorter side a reduced JPEG decode may produce.

    Raises:
        PIL.UnidentifiedImageError, OSError: the data is not a readable image.
        UnsupportedFormatError: an image in a format the service does not accept.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    with Image.open(source) as img:
        check_format(img)
        return prepare(img, draft_size=draft_size)


def prepare(img: Image.Image, *, draft_size: int = IMAGE_SIZE) -> Image.Image:
    """Decode an opened image: reduced-scale JPEG decode, EXIF orientation, RGB.

    JPEGs are decoded at a reduced scale (Pillow's `draft`) when that still leaves the
    shorter side at least `draft_size`, which makes large photographs cheap to decode.
    Only the first frame of an animation is used.
    """
    if img.format == "JPEG":
        # draft picks the largest power-of-two reduction whose result is >= the size given;
        # ask for the aspect-preserving size whose shorter side is draft_size.
        scale = draft_size / min(img.size)
        img.draft("RGB", (round(img.width * scale), round(img.height * scale)))
    img = ImageOps.exif_transpose(img)
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited onto white."""
    if img.mode == "RGB":
        return img.copy() if img.readonly else img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit or float grayscale: scale the full range to 0..255 instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def resize_center(img: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """Rescale the shorter side to `size` and take the central `size` x `size` patch.

    Args:
        img: an RGB image.
        size: the side of the square output.

    Returns:
        uint8 array of shape (size, size, 3), RGB, HWC.
    """
    # ImageOps.fit crops the central region of the target aspect, then resizes it with
    # antialiasing: the same pixels as "shorter side to 256, central 256x256".
    patch = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
    return np.array(patch, dtype=np.uint8).reshape(size, size, 3)


def load_256(source: str | Path | bytes | io.BytesIO) -> np.ndarray:
    """Decode `source` and return the network's 256x256x3 uint8 RGB input."""
    return resize_center(open_rgb(source))
