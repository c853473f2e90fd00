"""Multipart uploads -> a batch of decoded images, with the limits applied."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartParser

from core import constants as C
from service.config import Settings
from service.decode import ImageError, ImageTooLargeError, decode
from service.metrics import Metrics

# Starlette keeps an uploaded file part in memory up to this size and spools a larger one to a
# temporary file (its default: 1 MB). `read_upload` reads every part whole into memory anyway,
# so for a 2-8 MB photo the disk write and read back bought nothing: 2-4 of the service's own
# CPU-ms per 12 MP image (README, "Performance"). At most this much more memory per part.
PART_IN_MEMORY_BYTES = 8 * 2**20


def keep_parts_in_memory(limit: int = PART_IN_MEMORY_BYTES) -> None:
    """Let file parts up to `limit` bytes stay in memory (Starlette's `spool_max_size`, a
    class attribute: it holds for every app of the process)."""
    MultiPartParser.spool_max_size = limit


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """The bytes of one part, never reading more than the per-image limit plus one byte."""
    data = await upload.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise ImageTooLargeError(
            f"{upload.filename or 'an image'} is larger than the limit of "
            f"{settings.max_image_bytes} bytes"
        )
    return data


@dataclass
class Uploads:
    raw: list[bytes]  # as uploaded
    extensions: list[str]  # ".jpg", ".png", ... from the decoded format
    pixels: np.ndarray  # uint8 (n, 256, 256, 3), the model's input


def check_image_count(count: int, settings: Settings) -> None:
    """413 for more images in one request than `max_images_per_request`."""
    if count > settings.max_images_per_request:
        raise ImageTooLargeError(
            f"{count} images in one request; the limit is {settings.max_images_per_request}"
        )


async def read_images(uploads: list[UploadFile], settings: Settings, metrics: Metrics) -> Uploads:
    """Read and decode every part, decoding in worker threads."""
    check_image_count(len(uploads), settings)
    raw = [await read_upload(u, settings) for u in uploads]
    return await decode_images(raw, settings, metrics)


async def decode_images(raw: list[bytes], settings: Settings, metrics: Metrics) -> Uploads:
    """Decode encoded image files (from parts, or a protocol's BYTES tensor) in worker
    threads, under the byte and pixel limits."""
    check_image_count(len(raw), settings)
    try:
        decoded = await asyncio.gather(*(
            run_in_threadpool(decode, data, max_bytes=settings.max_image_bytes,
                              max_pixels=settings.max_image_pixels)
            for data in raw
        ))  # fmt: skip
    except ImageError:
        metrics.images.labels("rejected").inc(len(raw))
        raise
    metrics.images.labels("decoded").inc(len(raw))
    return Uploads(
        raw=raw,
        extensions=[C.FORMAT_SUFFIX[fmt] for _, fmt in decoded],
        pixels=np.stack([pixels for pixels, _ in decoded]),
    )
