"""Stored gallery images -> another model's fc7 vectors: the one re-embedding shared by
`alexnet reindex` (offline, `service.indexing.reindex`) and a model switch while serving
(`service.model_switch`).

A stored image is decoded under the service's limits, as an upload is; one that can no
longer be decoded stops the re-embedding (the gallery is left as it was), since a gallery
whose items are not all embedded by one model cannot be switched to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from service.config import Settings
from service.decode import ImageError, decode

BATCH = 8  # images per model call


def stored_pixels(chunk: Sequence[tuple[str, bytes]], settings: Settings) -> np.ndarray:
    """The (n, 256, 256, 3) model input of stored images `(id, bytes)`.

    Raises:
        ValueError: an image can no longer be decoded (names the item).
    """
    pixels = []
    for item_id, data in chunk:
        try:
            decoded, _ = decode(
                data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
            )
        except ImageError as e:
            raise ValueError(
                f"the stored image of item {item_id} can no longer be decoded ({e.detail}); "
                "gallery unchanged"
            ) from None
        pixels.append(decoded)
    return np.stack(pixels)


def embed_stored(
    chunk: Sequence[tuple[str, bytes]],
    fc7_of: Callable[[np.ndarray], np.ndarray],
    settings: Settings,
    batch: int = BATCH,
) -> dict[str, np.ndarray]:
    """id -> fc7 vector of stored images, in model calls of at most `batch` images.

    Args:
        chunk: (id, image bytes) of the items.
        fc7_of: (n, 256, 256, 3) uint8 -> (n, 4096) fc7, the new model's.
        settings: the decode limits.
        batch: images per model call.
    """
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(chunk), batch):
        part = chunk[start : start + batch]
        fc7 = fc7_of(stored_pixels(part, settings))
        vectors.update({item_id: v for (item_id, _), v in zip(part, fc7, strict=True)})
    return vectors
