"""What every gallery backend offers: the one interface the routers, the offline commands and
`alexnet gallery copy` use, whichever backend runs (`backends.open_gallery` picks it).

Two backends implement it:
    Gallery     (facade.py)      a folder: SQLite + image files + FAISS in memory, one process
    PgGallery   (pg_gallery.py)  a postgresql:// URL: PostgreSQL + pgvector, shared by replicas

Every write is all or none and durable once it returns. A backend whose database cannot be
reached raises `GalleryUnavailableError` (the service answers 503 with Retry-After).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from service.gallery.items import Item, ItemRecord, ModelBinding, Neighbor, NewItem, StoredImage


class GalleryBackend(Protocol):
    """A gallery of images with their FC7 vectors, bound to the model that made them."""

    @property
    def location(self) -> str:
        """The folder or the database URL (without its password)."""

    @property
    def model_id(self) -> str:
        """'name:version' of the model whose vectors the gallery holds."""

    @property
    def model_sha256(self) -> str:
        """sha256 of that model's ONNX file."""

    @property
    def dim(self) -> int:
        """Vector length."""

    @property
    def index_kind(self) -> str:
        """How a search runs now ("exact", "compressed", "hnsw", ...)."""

    def __len__(self) -> int: ...

    def problem(self) -> str | None:
        """None while the gallery answers, else why not (its database is unreachable)."""

    def close(self) -> None: ...

    def __enter__(self) -> GalleryBackend: ...

    def __exit__(self, *exc: object) -> None: ...

    # writes
    def add(self, items: list[NewItem], model_sha256: str | None = None) -> list[str]:
        """Store images with their vectors; the new ids in order (ValueError: nothing written).
        With `model_sha256` (the model that made the vectors): GalleryModelChangedError, and
        nothing written, if the gallery is bound to another model when the rows are written."""

    def add_vectors(
        self,
        vectors: np.ndarray,
        *,
        image_bytes: bytes,
        image_ext: str,
        labels: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> list[str]:
        """Store vectors made elsewhere (the bench) that share one image."""

    def remove(self, id: str) -> bool:
        """Delete an item; False if there is no such id."""

    def replace_vectors(
        self, vectors: dict[str, np.ndarray], *, model_sha256: str, model_id: str
    ) -> None:
        """Swap every vector for one made by another model, at once (`alexnet reindex`)."""

    def switch_vectors(
        self,
        vectors: dict[str, np.ndarray],
        embed: Callable[[list[tuple[str, bytes]]], dict[str, np.ndarray]],
        *,
        from_sha256: str,
        model_sha256: str,
        model_id: str,
    ) -> int:
        """A model switch's last step, every write held off: embed the items `vectors` lacks
        (`embed`: (id, image bytes) -> vector), swap all vectors and the binding at once;
        how many were embedded (GalleryModelChangedError: no longer bound to `from_sha256`)."""

    def active_binding(self) -> ModelBinding:
        """The model the stored vectors are made by now (another replica may switch it)."""

    def rebind(self, binding: ModelBinding) -> None:
        """Follow a switch made elsewhere (GalleryModelChangedError unless bound to it)."""

    def import_records(self, records: Sequence[ItemRecord]) -> None:
        """Store items with their ids and creation times kept (ValueError if one exists)."""

    # reads
    def get(self, id: str, with_vector: bool = False) -> Item | None: ...

    def image(self, id: str) -> StoredImage | None: ...

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[Item], int]:
        """A page of items in insertion order, and the total number of items."""

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` the gallery holds."""

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""

    def iter_images(self) -> Iterator[tuple[str, bytes]]:
        """(id, image bytes) of every item, in insertion order."""

    def iter_records(self) -> Iterator[ItemRecord]:
        """Every item with its image and vector, in insertion order."""

    def search(
        self, vector: np.ndarray, k: int = 10, model_sha256: str | None = None
    ) -> list[Neighbor]:
        """The `k` nearest items by Euclidean distance (exact distances), nearest first.
        With `model_sha256` (the model that made `vector`): GalleryModelChangedError if the
        gallery holds another model's vectors."""

    def search_by_id(
        self, id: str, k: int = 10, exclude_self: bool = False
    ) -> list[Neighbor] | None:
        """The `k` items nearest to an item's vector; None if there is no such id."""
