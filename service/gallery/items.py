"""What goes into and comes out of the gallery, the errors it raises, and the input checks.

`Neighbor` is also the `/similar` answer of the HTTP API (`service.schemas.SimilarResponse`):
pydantic serialises the dataclass and puts it into the OpenAPI schema, with the description
of `distance` given here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Annotated, Any

import numpy as np
from pydantic import Field

ID_RE = re.compile(r"[0-9a-f]{32}")
EXT_RE = re.compile(r"\.[a-z0-9]{1,10}")


class GalleryModelMismatchError(RuntimeError):
    """The gallery's vectors were made by another model than the one being served."""


class GalleryModelChangedError(GalleryModelMismatchError):
    """A vector of one model met a gallery now bound to another: its binding changed since
    the vector was made (a model switch, `alexnet reindex`). Nothing was written; the
    service answers with its current model, or 503 with Retry-After while it loads it."""


class GalleryLockedError(RuntimeError):
    """The gallery folder is already open (another process, or another `Gallery` object)."""


class GalleryUnavailableError(RuntimeError):
    """The gallery's database cannot be reached right now (the service answers 503 with
    Retry-After); nothing was changed, or the outcome of a write is unknown and it can be
    retried."""


@dataclass
class NewItem:
    """An image to add, with the FC7 vector the served model computed for it."""

    image_bytes: bytes
    image_ext: str  # e.g. ".jpg"; becomes part of the file name, so it is validated
    vector: np.ndarray  # (dim,) float32
    label: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    """A stored item; `vector` is filled only when asked for."""

    id: str
    label: str | None
    metadata: dict[str, Any]
    created_at: str | None
    image_ext: str  # ".jpg"
    image_sha256: str | None
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class StoredImage:
    """An item's image, the bytes as uploaded."""

    data: bytes
    ext: str  # ".jpg"


@dataclass(frozen=True)
class ItemRecord:
    """Everything stored of an item: what `iter_records` gives and `import_records` takes
    (`alexnet gallery copy` moves galleries between backends with them, ids kept)."""

    id: str
    label: str | None
    metadata: dict[str, Any]
    created_at: str | None
    image_bytes: bytes
    image_ext: str
    vector: np.ndarray  # (dim,) float32


@dataclass(frozen=True)
class Neighbor:
    """A search hit; `distance` is Euclidean (not squared)."""

    id: str
    distance: Annotated[float, Field(description="Euclidean distance between fc7 vectors")]
    label: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ModelBinding:
    """The model a gallery's vectors were made by."""

    model_id: str
    model_sha256: str
    dim: int


def is_valid_id(value: object) -> bool:
    """True for a gallery id: 32 lowercase hex characters (`uuid4().hex`)."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def item_from_row(row: tuple, vector: np.ndarray | None) -> Item:
    """An `Item` from its row (id, label, metadata JSON, created_at, image file, sha256)."""
    item_id, label, metadata, created_at, image_file, image_sha256 = row
    return Item(
        id=item_id, label=label, metadata=json.loads(metadata), created_at=created_at,
        image_ext=PurePath(image_file).suffix, image_sha256=image_sha256, vector=vector,
    )  # fmt: skip


def check_vectors(value: object, dim: int, what: str, *, rows: bool = False) -> np.ndarray:
    """`value` as a contiguous float32 array, or ValueError naming `what`.

    Args:
        value: one vector, or with `rows` a stack of them.
        dim: vector length.
        what: names the input in the message ("item 3", "query").
        rows: expect (n, dim) instead of (dim,).
    """
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: vector is not numeric ({e})") from None
    if array.ndim != 1 + rows or array.shape[-1] != dim:
        expected = f"(n, {dim})" if rows else f"({dim},)"
        raise ValueError(f"{what}: vector has shape {array.shape}, expected {expected}")
    # Checked after the cast: float64 values beyond float32's range become inf.
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: vector has NaN or infinite values")
    return np.ascontiguousarray(array)


def check_model(model_sha256: str, model_id: str) -> None:
    """ValueError unless both are non-empty strings."""
    if not isinstance(model_sha256, str) or not model_sha256:
        raise ValueError("model_sha256 must be a non-empty string")
    if not isinstance(model_id, str) or not model_id:
        raise ValueError("model_id must be a non-empty string")


def check_binding(binding: ModelBinding, model_sha256: str, location: str) -> None:
    """GalleryModelChangedError unless the gallery's vectors are those of `model_sha256`."""
    if binding.model_sha256 != model_sha256:
        raise GalleryModelChangedError(
            f"gallery {location} now holds vectors of model {binding.model_id} (sha256 "
            f"{binding.model_sha256[:12]}...), not of the model that made this vector "
            f"(sha256 {model_sha256[:12]}...)"
        )


def check_open(model_sha256: str, model_id: str, dim: int, exact_max: int) -> None:
    """ValueError unless the arguments of a gallery's `open` are usable."""
    check_model(model_sha256, model_id)
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if exact_max < 0:
        raise ValueError(f"exact_max must be >= 0, got {exact_max}")


def check_k(k: int) -> None:
    """ValueError unless a search asks for at least one neighbour."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def check_page(offset: int, limit: int) -> None:
    """ValueError unless a page's offset and limit are >= 0."""
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must be >= 0, got {offset} and {limit}")


def check_image(image_bytes: object, image_ext: object, what: str) -> tuple[bytes, str]:
    """(the bytes, the lower-case extension) of an image to store, or ValueError."""
    if not isinstance(image_bytes, (bytes, bytearray, memoryview)):
        raise ValueError(f"{what}: image_bytes must be bytes")
    data = bytes(image_bytes)
    if not data:
        raise ValueError(f"{what}: image_bytes is empty")
    ext = image_ext.lower() if isinstance(image_ext, str) else ""
    if not EXT_RE.fullmatch(ext):
        raise ValueError(
            f"{what}: invalid image_ext {image_ext!r}, expected like '.jpg' "
            "(a dot and 1-10 letters or digits)"
        )
    return data, ext


def has_nul(value: object) -> bool:
    """True if a string, or any key or string inside a JSON value, holds a NUL character:
    PostgreSQL's text and jsonb cannot store one, so neither backend takes it."""
    level = [value]
    while level:
        strings = [v for v in level if isinstance(v, str)]
        if any("\x00" in s for s in strings):
            return True
        level = [c for v in level if isinstance(v, dict) for c in (*v.keys(), *v.values())] + [
            c for v in level if isinstance(v, list) for c in v
        ]
    return False


def check_label(label: object, what: str) -> str | None:
    if label is not None and not isinstance(label, str):
        raise ValueError(f"{what}: label must be a string or None")
    if label is not None and has_nul(label):
        raise ValueError(f"{what}: label must not contain NUL characters")
    return label


def metadata_json(metadata: object, what: str) -> str:
    """The metadata dict as the JSON text stored in its row, or ValueError."""
    if not isinstance(metadata, dict):
        raise ValueError(f"{what}: metadata must be a dict (a JSON object)")
    if has_nul(metadata):
        raise ValueError(f"{what}: metadata must not contain NUL characters")
    try:
        return json.dumps(metadata, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: metadata is not JSON-serialisable ({e})") from None
