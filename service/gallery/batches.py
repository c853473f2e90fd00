"""What an add writes - checked rows, their vectors and their image files - and how.

A batch is made, and every input checked, before anything is written: an invalid item
writes nothing. Each item of `add` has its own image file, named after its id
(`images/<id><ext>`); the rows of one `add_vectors` call share one file, named like one.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.store import now_iso
from service.gallery.image_files import ImageFiles, file_name
from service.gallery.index_policy import GalleryIndex
from service.gallery.items import (
    ItemRecord,
    NewItem,
    check_binding,
    check_image,
    check_label,
    check_vectors,
    is_valid_id,
    metadata_json,
)
from service.gallery.sqlite_rows import SqliteRows


@dataclass
class Batch:
    """Rows to insert in one transaction, after their files are written."""

    rows: list[tuple]  # (id, label, metadata JSON, created_at, image_file, image_sha256)
    vectors: np.ndarray  # (len(rows), dim) float32
    files: list[tuple[str, bytes]]  # (image file name, bytes)

    @property
    def ids(self) -> list[str]:
        return [row[0] for row in self.rows]


def batch_of_items(items: list[NewItem], dim: int) -> Batch:
    """The rows, vectors and files of `items`, or ValueError naming the first invalid one."""
    rows, vectors, files = [], [], []
    for i, item in enumerate(items):
        what = f"item {i}"
        data, ext = check_image(item.image_bytes, item.image_ext, what)
        vectors.append(check_vectors(item.vector, dim, what))
        label = check_label(item.label, what)
        metadata = metadata_json(item.metadata, what)
        item_id = uuid.uuid4().hex
        name = file_name(item_id, ext)
        rows.append((item_id, label, metadata, now_iso(), name, sha256(data)))
        files.append((name, data))
    stacked = np.stack(vectors) if vectors else np.empty((0, dim), np.float32)
    return Batch(rows, stacked, files)


def batch_of_records(records: Sequence[ItemRecord], dim: int) -> Batch:
    """The rows, vectors and files of items copied from another gallery, their ids and
    creation times kept, or ValueError naming the first invalid one."""
    rows, vectors, files = [], [], []
    for i, record in enumerate(records):
        what = f"record {i} ({record.id!r})"
        if not is_valid_id(record.id):
            raise ValueError(f"{what}: not a gallery id")
        data, ext = check_image(record.image_bytes, record.image_ext, what)
        vectors.append(check_vectors(record.vector, dim, what))
        label = check_label(record.label, what)
        metadata = metadata_json(record.metadata, what)
        name = file_name(record.id, ext)
        rows.append((record.id, label, metadata, record.created_at, name, sha256(data)))
        files.append((name, data))
    if len({row[0] for row in rows}) != len(rows):
        raise ValueError("the same id twice in one import")
    stacked = np.stack(vectors) if vectors else np.empty((0, dim), np.float32)
    return Batch(rows, stacked, files)


def batch_of_vectors(
    vectors: np.ndarray,
    dim: int,
    image_bytes: bytes,
    image_ext: str,
    labels: Sequence[str | None] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
) -> Batch:
    """Rows for (n, dim) vectors that share one image file, or ValueError (`add_vectors`)."""
    matrix = check_vectors(vectors, dim, "vectors", rows=True)
    data, ext = check_image(image_bytes, image_ext, "image")
    n = len(matrix)
    labels = [None] * n if labels is None else list(labels)
    metadata = [{}] * n if metadata is None else list(metadata)
    if len(labels) != n or len(metadata) != n:
        raise ValueError(f"{n} vectors, {len(labels)} labels and {len(metadata)} metadata dicts")
    name, digest, created = file_name(uuid.uuid4().hex, ext), sha256(data), now_iso()
    rows = [
        (uuid.uuid4().hex, check_label(label, f"row {j}"), metadata_json(meta, f"row {j}"),
         created, name, digest)
        for j, (label, meta) in enumerate(zip(labels, metadata, strict=True))
    ]  # fmt: skip
    return Batch(rows, matrix, [(name, data)] if rows else [])


def store(
    batch: Batch, files: ImageFiles, rows: SqliteRows, index: GalleryIndex, lock: threading.Lock,
    model_sha256: str | None = None,
) -> None:  # fmt: skip
    """Write a batch, all or none; durable once this returns.

    Files first, outside `lock` (fsync is slow): a crash before the commit leaves only
    orphans, which the next open removes, and a failed commit removes them at once. Then,
    under `lock`, the rows in one transaction and their vectors into `index`.

    With `model_sha256` (the model that made the vectors), GalleryModelChangedError and
    nothing written if the rows are bound to another model by then (checked under `lock`).
    """
    if not batch.rows:
        return
    rows.require_open()
    written: list[str] = []
    committed = False
    try:
        for name, data in batch.files:
            files.write(name, data)
            written.append(name)
        with lock:
            if model_sha256 is not None:
                check_binding(rows.binding, model_sha256, str(rows.root))
            rowids = rows.insert(batch.rows, batch.vectors)
            committed = True
            # Under the same lock as the commit, so a remove cannot slip in between.
            index.add(batch.vectors, rowids)
    except BaseException:
        if not committed:  # once committed, the files belong to rows
            for name in written:
                files.remove(name)
        raise


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
