"""Multipart uploads -> a batch of decoded images, with the limits applied."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from core import constants as C
from service.config import Settings
from service.decode import ImageError, ImageTooLargeError, decode
from service.metrics import Metrics


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


async def read_images(uploads: list[UploadFile], settings: Settings, metrics: Metrics) -> Uploads:
    """Read and decode every part, decoding in worker threads."""
    if len(uploads) > settings.max_images_per_request:
        raise ImageTooLargeError(
            f"{len(uploads)} images in one request; the limit is {settings.max_images_per_request}"
        )
    raw = [await read_upload(u, settings) for u in uploads]
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
