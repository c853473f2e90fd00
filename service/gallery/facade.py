"""`Gallery`: the one object the service, the command line and the bench use.

It wires the parts of the package together - the folder lock, the SQLite rows, the image
files and the index - and holds the lock that makes it safe to share between threads.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.constants import FC7_DIM, GALLERY_EXACT_MAX, GALLERY_IMAGES_DIR
from core.durable import fsync_path
from service.gallery.batches import batch_of_items, batch_of_records, batch_of_vectors, store
from service.gallery.folder_lock import FolderLock
from service.gallery.image_files import ImageFiles
from service.gallery.index_policy import GalleryIndex
from service.gallery.items import (
    Item,
    ItemRecord,
    ModelBinding,
    Neighbor,
    NewItem,
    StoredImage,
    check_binding,
    check_k,
    check_model,
    check_open,
    check_page,
    check_vectors,
    is_valid_id,
    item_from_row,
)
from service.gallery.search import nearest
from service.gallery.sqlite_rows import ITEM_COLUMNS, SqliteRows, blob_vector

log = logging.getLogger(__name__)


class Gallery:
    """Images with FC7 vectors in SQLite + files, searched with a FAISS index in memory.

    Open with `Gallery.open`. Safe to share between threads: one lock serialises database
    access and index updates, and searches take it too so they never see a half-applied
    write (FAISS already spreads one search over the cores).
    """

    def __init__(
        self, root: Path, folder_lock: FolderLock, rows: SqliteRows, files: ImageFiles,
        exact_max: int,
    ) -> None:  # fmt: skip
        """Internal: use `Gallery.open`."""
        self.root, self.images_dir, self.exact_max = root, files.folder, exact_max
        self._folder_lock, self._rows, self._files = folder_lock, rows, files
        self._lock = threading.Lock()
        self._index = GalleryIndex(rows, exact_max, self._lock)

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        model_sha256: str,
        model_id: str,
        dim: int = FC7_DIM,
        exact_max: int = GALLERY_EXACT_MAX,
    ) -> Gallery:
        """Open (or create) the gallery in `root`, bound to the model that makes its vectors.

        Args:
            root: gallery folder, created if missing.
            model_sha256: sha256 of the model serving the vectors (manifest `sha256`).
            model_id: its "name:version", for messages.
            dim: vector length (FC7: 4096).
            exact_max: up to this many items the index is exact; above, compressed with
                exact re-ranking (it needs at least 64 items to train).

        Raises:
            GalleryModelMismatchError: the gallery holds vectors of another model.
            GalleryLockedError: the gallery is already open elsewhere.
        """
        check_open(model_sha256, model_id, dim, exact_max)
        root = Path(root)
        files = ImageFiles(root / GALLERY_IMAGES_DIR)
        folder_lock = FolderLock(root)
        rows = None
        try:
            rows = SqliteRows.open(root, ModelBinding(model_id, model_sha256, dim))
            for folder in (files.folder, root):  # make a new gallery's entries durable
                fsync_path(folder)
            gallery = cls(root, folder_lock, rows, files, exact_max)
            files.sweep(gallery._index.load())  # remove image files without a row
            gallery._index.save_soon()  # the index file, if it is behind (in the background)
        except BaseException:
            if rows is not None:
                rows.close()
            folder_lock.release()
            raise
        log.info(
            "gallery %s: %d item(s), model %s, %s index",
            root, len(gallery), gallery.model_id, gallery.index_kind,
        )  # fmt: skip
        return gallery

    def close(self) -> None:
        """Write the index file if it is behind, close the database and release the
        folder; further calls raise RuntimeError."""
        self._index.stop_saving()  # outside the lock: a background write takes it
        with self._lock:
            if self._rows.closed:
                return
            self._index.save()
            self._rows.close()
            self._folder_lock.release()
            self._index.clear()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- properties

    @property
    def location(self) -> str:
        """Where the gallery lives: its folder."""
        return str(self.root)

    @property
    def model_id(self) -> str:
        """'name:version' of the model whose vectors the gallery holds."""
        return self._rows.binding.model_id

    @property
    def model_sha256(self) -> str:
        """sha256 of that model's ONNX file."""
        return self._rows.binding.model_sha256

    @property
    def dim(self) -> int:
        """Vector length."""
        return self._rows.binding.dim

    @property
    def index_kind(self) -> str:
        """ "exact" or "compressed"."""
        return self._index.kind

    def __len__(self) -> int:
        return self._index.ntotal

    def problem(self) -> str | None:
        """Always None: a folder gallery in this process has nothing to lose contact with."""
        return None

    # ----------------------------------------------------------------- writes

    def add(self, items: list[NewItem], model_sha256: str | None = None) -> list[str]:
        """Store images with their vectors, all or none; durable once this returns.

        Args:
            items: the images, their extensions (".jpg"), vectors, labels and metadata.
            model_sha256: the model that made the vectors; if given and the gallery is bound
                to another model by the time the rows are written, nothing is written.

        Returns:
            The new ids, in the order of `items`.

        Raises:
            ValueError: an item is invalid (nothing is written then).
            GalleryModelChangedError: the gallery holds another model's vectors now.
        """
        batch = batch_of_items(items, self.dim)
        store(batch, self._files, self._rows, self._index, self._lock, model_sha256)
        return batch.ids

    def add_vectors(
        self,
        vectors: np.ndarray,
        *,
        image_bytes: bytes,
        image_ext: str,
        labels: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> list[str]:
        """Store vectors made elsewhere (a benchmark's, an import's) that share one image
        file, all or none, durable once this returns: the file written once (and removed
        with the last of its rows), the rows in one transaction, the index updated once.
        Fill a large gallery with one call per chunk of some thousand vectors.

        Args:
            vectors: (n, dim) float32.
            image_bytes: the image all the rows refer to; image_ext: its extension (".jpg").
            labels: one per vector (default: None each).
            metadata: one dict per vector (default: {} each).

        Returns:
            The new ids, in the order of `vectors`.

        Raises:
            ValueError: an input is invalid (nothing is written then).
        """
        batch = batch_of_vectors(vectors, self.dim, image_bytes, image_ext, labels, metadata)
        store(batch, self._files, self._rows, self._index, self._lock)
        return batch.ids

    def remove(self, id: str) -> bool:
        """Delete an item (row, image file, index entry); False if there is no such id."""
        if not is_valid_id(id):
            return False
        with self._lock:
            deleted = self._rows.delete(id)
            if deleted is None:
                return False
            rowid, unused_file = deleted
            if unused_file is not None:
                # After the commit: a crash in between leaves an orphan, removed at open.
                self._files.remove(unused_file)
            self._index.remove(np.array([rowid], dtype=np.int64))
        return True

    def replace_vectors(
        self, vectors: dict[str, np.ndarray], *, model_sha256: str, model_id: str
    ) -> None:
        """Swap every vector for one made by another model (`alexnet reindex`).

        Args:
            vectors: id -> new (dim,) vector, for exactly the gallery's items.
            model_sha256: sha256 of the model that made them.
            model_id: its "name:version".

        Raises:
            ValueError: a vector is invalid, or the ids are not exactly the gallery's.
        """
        check_model(model_sha256, model_id)
        checked = {k: check_vectors(v, self.dim, f"vector for {k!r}") for k, v in vectors.items()}
        with self._lock:
            self._replace(checked, ModelBinding(model_id, model_sha256, self.dim))

    def _replace(self, checked: dict[str, np.ndarray], binding: ModelBinding) -> None:
        """replace_vectors with checked vectors, the lock held."""
        rowids = self._rows.rowids_of_every(checked)
        # Built before the commit, so running out of memory changes nothing.
        index = self._index.prepare(list(checked.values()), rowids)
        self._rows.replace_vectors(rowids, list(checked.values()), binding)
        self._index.use(index)

    def switch_vectors(
        self,
        vectors: dict[str, np.ndarray],
        embed: Callable[[list[tuple[str, bytes]]], dict[str, np.ndarray]],
        *,
        from_sha256: str,
        model_sha256: str,
        model_id: str,
    ) -> int:
        """The last step of a model switch: with every write held off, embed the items that
        `vectors` lacks (added meanwhile), then swap every vector and the binding at once.

        Args:
            vectors: id -> the new model's vector, made beforehand (ids deleted since are
                ignored).
            embed: (id, image bytes) of the missing items -> their new vectors.
            from_sha256: the model the gallery must still be bound to.
            model_sha256, model_id: the new model.

        Returns:
            How many items `embed` was given.

        Raises:
            GalleryModelChangedError: the gallery is no longer bound to `from_sha256`.
            ValueError: a vector is invalid or missing (the gallery is unchanged).
        """
        check_model(model_sha256, model_id)
        with self._lock:
            check_binding(self._rows.binding, from_sha256, self.location)
            ids = self._rows.ids()
            missing = [i for i in ids if i not in vectors]
            made = embed([(i, self._files.path(self._rows.image_file(i)).read_bytes())
                          for i in missing]) if missing else {}  # fmt: skip
            checked = {
                i: check_vectors(vectors[i] if i in vectors else made.get(i), self.dim, i)
                for i in ids
            }
            self._replace(checked, ModelBinding(model_id, model_sha256, self.dim))
        return len(missing)

    def active_binding(self) -> ModelBinding:
        """The model the gallery's vectors are made by now."""
        return self._rows.binding

    def rebind(self, binding: ModelBinding) -> None:
        """Follow a switch made elsewhere: nothing to do for a folder, which only this
        process writes (GalleryModelChangedError if `binding` is not its model)."""
        check_binding(self._rows.binding, binding.model_sha256, self.location)

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        with self._lock:
            return self._rows.ids()

    # ----------------------------------------------------------------- reads

    def get(self, id: str, with_vector: bool = False) -> Item | None:
        """The item with this id (its vector too if `with_vector`), or None."""
        if not is_valid_id(id):
            return None
        with self._lock:
            found = self._rows.item(id, with_vector)
        return None if found is None else item_from_row(*found)

    def image(self, id: str) -> StoredImage | None:
        """The stored image of this id, or None (unknown id or missing file)."""
        if not is_valid_id(id):
            return None
        with self._lock:
            name = self._rows.image_file(id)
        path = None if name is None else self._files.existing(name)
        if path is None:
            return None
        try:
            return StoredImage(path.read_bytes(), path.suffix)
        except FileNotFoundError:  # deleted since
            return None

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[Item], int]:
        """A page of items in insertion order, and the total number of items."""
        check_page(offset, limit)
        with self._lock:
            rows, total = self._rows.page(offset, limit)
        return [item_from_row(row, None) for row in rows], total

    def iter_images(self) -> Iterator[tuple[str, bytes]]:
        """(id, image bytes) of every item in insertion order, read a chunk at a time (the
        lock is held while a chunk is read, not in between)."""
        for rows in self._rows.chunks("id, image_file", guard=self._lock):
            for _, item_id, image_file in rows:
                yield item_id, self._files.path(image_file).read_bytes()

    def iter_records(self) -> Iterator[ItemRecord]:
        """Every item with its image bytes and vector, in insertion order, a chunk at a time."""
        columns = f"{ITEM_COLUMNS}, vector"
        for rows in self._rows.chunks(columns, guard=self._lock):
            for _, item_id, label, metadata, created_at, image_file, _, blob in rows:
                yield ItemRecord(
                    id=item_id, label=label, metadata=json.loads(metadata),
                    created_at=created_at, image_bytes=self._files.path(image_file).read_bytes(),
                    image_ext=Path(image_file).suffix, vector=blob_vector(blob),
                )  # fmt: skip

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` the gallery holds."""
        with self._lock:
            return self._rows.known_ids(ids)

    def import_records(self, records: Sequence[ItemRecord]) -> None:
        """Store items made elsewhere with their ids and creation times kept (`alexnet gallery
        copy`), all or none, durable once this returns.

        Raises:
            ValueError: a record is invalid or its id is already stored (nothing written).
        """
        batch = batch_of_records(records, self.dim)
        with self._lock:
            present = self._rows.known_ids(batch.ids)
        if present:
            raise ValueError(f"{len(present)} id(s) already stored, e.g. {sorted(present)[0]}")
        store(batch, self._files, self._rows, self._index, self._lock)

    def search(
        self, vector: np.ndarray, k: int = 10, model_sha256: str | None = None
    ) -> list[Neighbor]:
        """The `k` items nearest to `vector` by Euclidean distance, nearest first.

        Args:
            vector: (dim,) query vector.
            k: how many neighbours (all items if the gallery has fewer).
            model_sha256: the model that made `vector`: GalleryModelChangedError if the
                gallery holds another model's vectors (checked under the lock).
        """
        query = check_vectors(vector, self.dim, "query")
        check_k(k)
        with self._lock:
            if model_sha256 is not None:
                check_binding(self._rows.binding, model_sha256, self.location)
            return nearest(self._index, self._rows, query, k)

    def search_by_id(
        self, id: str, k: int = 10, exclude_self: bool = False
    ) -> list[Neighbor] | None:
        """The `k` items nearest to an item's vector; None if there is no such id.

        Args:
            id: the item whose vector is the query.
            k: how many neighbours.
            exclude_self: leave the item itself out of the answer.
        """
        check_k(k)
        if not is_valid_id(id):
            return None
        with self._lock:
            found = self._rows.vector_of(id)
            if found is None:
                return None
            rowid, query = found
            return nearest(self._index, self._rows, query, k, rowid if exclude_self else None)
