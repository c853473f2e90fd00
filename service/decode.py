"""Uploaded bytes -> the network's uint8 256x256x3 RGB input, or a 4xx that names the problem.

Runs in a worker thread (Pillow releases the GIL while decoding). The pixel size is
checked from the header before any pixel is decoded, so decompression bombs cost nothing.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from core import constants as C
from core.imaging import prepare, resize_center

# What Pillow raises on a malformed file besides UnidentifiedImageError: its own "not this
# format" signals (SyntaxError, IndexError, TypeError, struct.error) and, from deeper in a
# plugin, OSError, ValueError (e.g. a PNG text chunk that inflates past MAX_TEXT_CHUNK) and
# EOFError. From untrusted bytes each of them means a bad file, never a server error.
CORRUPT_FILE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
                       struct.error)  # fmt: skip


class ImageError(ValueError):
    """An upload that is not a usable image; `status_code` is the HTTP answer."""

    status_code = 422

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class EmptyImageError(ImageError):
    status_code = 400


class ImageTooLargeError(ImageError):
    status_code = 413


class NotAnImageError(ImageError):
    status_code = 415


def sniff_format(data: bytes, *, max_bytes: int, max_pixels: int) -> str:
    """Check size and format from the header alone; returns Pillow's format name."""
    if not data:
        raise EmptyImageError("the uploaded file is empty")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format, img.size
    except (
        UnidentifiedImageError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as e:
        if isinstance(e, UnidentifiedImageError):
            raise NotAnImageError(
                "not an image, or not one of the accepted formats "
                f"({', '.join(sorted(C.ACCEPTED_FORMATS))})"
            ) from None
        raise ImageTooLargeError(f"the image has too many pixels ({e})") from None
    except CORRUPT_FILE_ERRORS as e:  # a header Pillow recognises but cannot parse
        raise ImageError(f"the image header is corrupt: {e}") from None
    if fmt not in C.ACCEPTED_FORMATS:
        raise NotAnImageError(
            f"{fmt} images are not accepted; send {', '.join(sorted(C.ACCEPTED_FORMATS))}"
        )
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"the image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}"
        )
    if w < 1 or h < 1:
        raise ImageError(f"the image has no pixels ({w}x{h})")
    return fmt


def decode(data: bytes, *, max_bytes: int, max_pixels: int) -> tuple[np.ndarray, str]:
    """Decode an upload to uint8 (256, 256, 3) RGB, the exported model's input.

    Returns:
        (the 256x256 image, Pillow's name of the file format)

    Raises:
        ImageError (400/413/415/422): empty, too large, not an accepted image, or corrupt.
    """
    fmt = sniff_format(data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as img:
            return resize_center(prepare(img)), fmt
    except (*CORRUPT_FILE_ERRORS, Image.DecompressionBombError) as e:
        raise ImageError(f"the image data is truncated or corrupt: {e}") from None
