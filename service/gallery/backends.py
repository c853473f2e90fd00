"""Which backend a gallery location names: a `postgresql://` URL is PostgreSQL + pgvector
(`pg_gallery`), anything else a folder (the embedded SQLite + FAISS gallery)."""

from __future__ import annotations

from pathlib import Path

from core.constants import FC7_DIM, GALLERY_EXACT_MAX
from service.gallery.facade import Gallery
from service.gallery.interface import GalleryBackend
from service.gallery.items import ModelBinding
from service.gallery.location import is_database_url
from service.gallery.sqlite_db import stored_model as folder_stored_model


def open_gallery(
    location: str | Path,
    *,
    model_sha256: str,
    model_id: str,
    dim: int = FC7_DIM,
    exact_max: int = GALLERY_EXACT_MAX,
) -> GalleryBackend:
    """Open (or create) the gallery at `location`, bound to the model that makes its vectors.

    Raises:
        GalleryModelMismatchError: it holds vectors of another model.
        GalleryLockedError: a folder gallery is open elsewhere.
        GalleryUnavailableError: the database cannot be reached.
    """
    binding = {"model_sha256": model_sha256, "model_id": model_id, "dim": dim}
    if is_database_url(location):
        from service.gallery.pg_gallery import PgGallery  # psycopg only when asked for

        return PgGallery.open(str(location), exact_max=exact_max, **binding)
    return Gallery.open(location, exact_max=exact_max, **binding)


def stored_model(location: str | Path) -> ModelBinding | None:
    """The model recorded in the gallery at `location`, or None if there is no gallery."""
    if is_database_url(location):
        from service.gallery.pg_gallery import stored_model as pg_stored_model

        return pg_stored_model(str(location))
    return folder_stored_model(location)
