"""Fill and re-embed a gallery outside the HTTP service (`alexnet index`, `alexnet reindex`).

    engine = engine_for(settings)
    with open_gallery(settings, engine) as gallery:
        ids, skipped = index_images(gallery, engine, paths, settings=settings)

A folder gallery is opened exclusively: stop the service first (or use POST /gallery). A
postgresql:// gallery is shared: both run while replicas serve it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core import constants as C
from service import resources
from service.config import Settings
from service.decode import ImageError, decode
from service.engine import Engine
from service.gallery import GalleryBackend, ModelBinding, NewItem, shown, stored_model
from service.gallery import open_gallery as open_location
from service.reembed import embed_stored

log = logging.getLogger(__name__)


def engine_for(settings: Settings) -> Engine:
    """The engine of the model the settings name (ALEXNET_MODEL or the store's only one)."""
    return Engine(resources.load_served_model(settings))


def open_gallery(settings: Settings, engine: Engine) -> GalleryBackend:
    """The settings' gallery, bound to the engine's model."""
    return resources.open_gallery(settings, engine.loaded)


def decode_file(path: Path, settings: Settings) -> tuple[bytes, np.ndarray, str] | None:
    """(file bytes, 256x256 pixels, format) of an image file, or None (logged) if unusable."""
    return decode_bytes(path.read_bytes(), path, settings)


def decode_bytes(
    data: bytes, source: object, settings: Settings
) -> tuple[bytes, np.ndarray, str] | None:
    """(the bytes, 256x256 pixels, format) of an encoded image, or None (logged, naming
    `source`) if unusable."""
    try:
        pixels, fmt = decode(
            data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
    except ImageError as e:
        log.warning("skipping %s: %s", source, e.detail)
        return None
    return data, pixels, fmt


def index_images(
    gallery: GalleryBackend,
    engine: Engine,
    paths: Sequence[Path],
    *,
    settings: Settings,
    label_of: Callable[[Path], str | None] = lambda _: None,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[list[str], int]:
    """Embed image files in batches and add them to the gallery.

    Args:
        gallery: an open gallery bound to the engine's model.
        engine: makes the fc7 vectors.
        paths: the image files; unreadable ones are skipped with a warning.
        settings: the decode limits (max_image_bytes, max_image_pixels).
        label_of: the label of each file.
        batch_size: images per engine call.
        progress: show a progress bar.

    Returns:
        (the new ids, the number of files skipped)
    """
    ids: list[str] = []
    skipped = 0
    bar = tqdm(total=len(paths), desc=f"indexing into {gallery.location}", unit="img",
               disable=not progress)  # fmt: skip
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        decoded = [(p, d) for p in chunk if (d := decode_file(p, settings)) is not None]
        skipped += len(chunk) - len(decoded)
        if decoded:
            _, fc7 = engine.run(np.stack([d[1] for _, d in decoded]))
            ids += gallery.add([
                NewItem(image_bytes=data, image_ext=C.FORMAT_SUFFIX[fmt], vector=v,
                        label=label_of(p), metadata={"source": str(p)})
                for (p, (data, _, fmt)), v in zip(decoded, fc7, strict=True)
            ])  # fmt: skip
        bar.update(len(chunk))
    bar.close()
    return ids, skipped


def reindex(
    settings: Settings, engine: Engine, *, batch_size: int = 8, progress: bool = True
) -> tuple[int | None, ModelBinding]:
    """Re-embed every stored image of the settings' gallery with the engine's model and
    switch the gallery to it in one transaction.

    Returns:
        (images re-embedded, the binding the gallery had before); the count is None when
        the gallery already holds the engine's model's vectors (nothing is done then).

    Raises:
        FileNotFoundError: there is no gallery.
        ValueError: a stored image can no longer be decoded (the gallery is unchanged).
    """
    recorded = stored_model(settings.gallery)
    if recorded is None:
        raise FileNotFoundError(f"no gallery at {shown(settings.gallery)}")
    binding = engine.loaded.gallery_binding()
    if recorded.model_sha256 == binding["model_sha256"]:
        return None, recorded
    with open_location(
        settings.gallery,
        model_sha256=recorded.model_sha256,
        model_id=recorded.model_id,
        exact_max=settings.gallery_exact_max,
    ) as g:
        stored = list(g.iter_images())
        vectors = {}
        batches = range(0, len(stored), batch_size)
        for start in tqdm(batches, desc="re-embedding", unit="batch", disable=not progress):
            chunk = stored[start : start + batch_size]
            vectors.update(embed_stored(chunk, lambda px: engine.run(px)[1], settings, batch_size))
        g.replace_vectors(vectors, **binding)
    return len(vectors), recorded
