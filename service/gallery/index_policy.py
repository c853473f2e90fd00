"""The gallery's in-memory index, and when it is exact and when compressed.

Up to `exact_max` items the index is exact (`ExactIndex`); above, and from MIN_TRAIN items
on, compressed (`CompressedIndex`, re-ranked with the full vectors read from SQLite). The
choice is made when the index is built: at open, when an add crosses `exact_max` and by
`replace_vectors`. A delete never switches back; the next open decides again.

A compressed index is persisted (`gallery.faiss`): written after it is built or brought up
to date (`index_saver`, in the background) and at close, and at open read back and brought
up to date with the rows instead of rebuilt, when it fits them (`index_restore`); when it
does not, or the index is exact, the file is removed. The exact index lives in memory only:
a rebuild of at most `exact_max` rows (5,000: 80 MB) takes about a second.

A compressed index is trained on one seeded random sample of the vectors
(`training_sample`), whether they are read from SQLite or held in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np

from service.gallery.index_file import IndexStamp, remove_leftovers
from service.gallery.index_restore import Restored, StaleIndexError, restore, too_few_lists
from service.gallery.index_saver import IndexSaver
from service.gallery.sqlite_rows import READ_CHUNK, SqliteRows
from service.gallery.vector_index import (
    MIN_TRAIN,
    PCA_SAMPLE,
    TRAIN_SAMPLE,
    CompressedIndex,
    ExactIndex,
)

log = logging.getLogger(__name__)

Index = ExactIndex | CompressedIndex


def training_sample(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions among `n` vectors that train a compressed index, drawn with a fixed seed.

    Returns:
        (PCA_SAMPLE positions that train the PCA and the lists,
         up to TRAIN_SAMPLE - PCA_SAMPLE more that train only the lists).
    """
    pick = np.random.default_rng(0).permutation(n)[:TRAIN_SAMPLE]
    return pick[:PCA_SAMPLE], pick[PCA_SAMPLE:]


class GalleryIndex:
    """The index of a gallery's rows (FAISS id = rowid), exact or compressed by their number.

    Not thread-safe: the gallery's lock serialises its calls.

    Args:
        rows: the gallery's SQLite rows (the training samples, and the full vectors that
            a compressed index re-ranks with).
        exact_max: up to this many items the index is exact.
        lock: the gallery's lock (a background write of the index file takes it).
    """

    def __init__(self, rows: SqliteRows, exact_max: int, lock: threading.Lock) -> None:
        self.rows, self.exact_max = rows, exact_max
        self._index: Index = ExactIndex(rows.dim)
        self._in_sync = True  # False once an update after a commit failed: never persisted
        self._saver = IndexSaver(rows.root, lock, self._snapshot)

    @property
    def kind(self) -> str:
        """ "exact" or "compressed"."""
        return self._index.kind

    @property
    def ntotal(self) -> int:
        return self._index.ntotal

    def search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        """The `n` nearest (rowid, squared distance) pairs, nearest first."""
        return self._index.search(query, n)

    def load(self) -> set[str]:
        """Index every stored row (at open): the index file brought up to date if it fits
        the rows, else a new index (and the file removed); returns the image files the
        rows name (for the orphan sweep)."""
        remove_leftovers(self.rows.root)
        count = self.rows.count()
        restored = self._restore(count) if self.wants_compressed(count) else None
        if restored is not None:
            self._index, self._saver.on_disk = restored.index, restored.stamp.changes
            self._in_sync = True
            self.rows.prune_deleted(restored.stamp.changes)  # no file needs older deletes
            return self.rows.image_files()
        if self._saver.discard():
            log.info("gallery %s: removed the index file", self.rows.root)
        self.rows.prune_deleted(self.rows.version().changes)
        self._index, known = self._build()
        self._in_sync = True
        return known

    def save_soon(self) -> None:
        """Write the index file in the background if it is behind (after `load`, `use`)."""
        self._saver.soon()

    def stop_saving(self) -> None:
        """Wait for a background write, and start no more (the caller must not hold the
        gallery's lock)."""
        self._saver.stop()

    def save(self) -> None:
        """Write the index file now if it is behind (at close, under the gallery's lock)."""
        self._saver.save()

    def add(self, vectors: np.ndarray, rowids: np.ndarray) -> None:
        """Add committed rows; an exact index that grows past `exact_max` is replaced by a
        compressed one of every row (if that fails the exact one goes on serving)."""
        self._update(self._index.add, vectors, rowids)
        if self._index.kind != "exact" or not self.wants_compressed(self._index.ntotal):
            return
        try:
            compressed, _ = self._build()
        except Exception:  # noqa: BLE001 - logged; the rows are committed, exact still answers
            log.exception("gallery %s: could not build the compressed index", self.rows.root)
            return
        self._index, self._in_sync = compressed, True
        log.info("gallery %s: %d items, switched to the compressed index", self.rows.root,
                 compressed.ntotal)  # fmt: skip
        self._saver.soon()

    def remove(self, rowids: np.ndarray) -> None:
        self._update(self._index.remove, rowids)

    def prepare(self, vectors: list[np.ndarray], rowids: np.ndarray) -> Index:
        """A new index of these (dim,) vectors under their rowids, to `use` once they are
        committed (`replace_vectors`: built first, so running out of memory changes nothing)."""
        if not vectors:
            return ExactIndex(self.rows.dim)
        stacked = np.stack(vectors)
        if not self.wants_compressed(len(stacked)):
            index: Index = ExactIndex(self.rows.dim)
        else:
            first, rest = training_sample(len(stacked))
            index = self._compressed(stacked[first], [stacked[rest]], len(stacked))
        index.add(stacked, rowids)
        return index

    def use(self, index: Index) -> None:
        """Serve `index`, the index of every committed row (`prepare`)."""
        self._index, self._in_sync = index, True
        self._saver.soon()

    def clear(self) -> None:
        """Drop every vector (the gallery is closed)."""
        self._index = ExactIndex(self.rows.dim)

    def wants_compressed(self, count: int) -> bool:
        return count > self.exact_max and count >= MIN_TRAIN

    def _update(self, change: Callable[..., None], *args: np.ndarray) -> None:
        """Apply `change` (add, remove) for committed rows; if it fails the index misses
        them, and is never written to the file (the next open rebuilds or catches up)."""
        try:
            change(*args)
        except BaseException:
            self._in_sync = False
            raise

    def _restore(self, count: int) -> Restored | None:
        """The index file brought up to date, or None (the reason logged)."""
        start = time.perf_counter()
        try:
            restored = restore(self._saver.path, self.rows, count)
        except StaleIndexError as e:
            log.info("gallery %s: not using the index file: %s", self.rows.root, e)
            return None
        except Exception:  # noqa: BLE001 - the rows are intact: rebuild from them
            log.exception("gallery %s: could not read the index file", self.rows.root)
            return None
        log.info("gallery %s: read the index file (change %d) and caught up (%d removed, "
                 "%d added) in %.1f s", self.rows.root, restored.stamp.changes,
                 restored.removed, restored.added, time.perf_counter() - start)  # fmt: skip
        return restored

    def _snapshot(self, on_disk: int | None) -> tuple[IndexStamp, np.ndarray] | None:
        """What to write to the index file (under the gallery's lock), or None: the index
        is exact, the file has it already, it missed an update, or its lists are due for
        retraining (the file would not be used)."""
        index = self._index
        if self.rows.closed or not isinstance(index, CompressedIndex) or not self._in_sync:
            return None
        if too_few_lists(index.ntotal, index.expected):
            return None
        version, binding = self.rows.version(), self.rows.binding
        if version.changes == on_disk:
            return None
        stamp = IndexStamp(version.uid, binding.model_sha256, binding.dim, version.changes,
                           version.last_rowid, index.ntotal, index.expected)  # fmt: skip
        return stamp, index.to_bytes()

    def _build(self) -> tuple[Index, set[str]]:
        """A new index of every stored row, and the image files the rows name."""
        count = self.rows.count()
        index = self._trained(count) if self.wants_compressed(count) else ExactIndex(self.rows.dim)
        known: set[str] = set()
        for rows in self.rows.chunks("image_file, vector"):
            known.update(image_file for _, image_file, _ in rows)
            index.add(*self.rows.stack(rows))
        return index, known

    def _trained(self, count: int) -> CompressedIndex:
        """An empty compressed index trained on a sample of the `count` stored rows."""
        rowids = self.rows.rowids()
        first, rest = training_sample(len(rowids))
        # Read in rowid order; the vectors beyond PCA_SAMPLE a chunk at a time (the index
        # keeps them in PCA dimensions only).
        first, rest = np.sort(rowids[first]), np.sort(rowids[rest])
        chunks = (
            self.rows.vectors(rest[i : i + READ_CHUNK])[1] for i in range(0, len(rest), READ_CHUNK)
        )
        log.info("gallery %s: training a compressed index on %d vectors", self.rows.root,
                 len(first) + len(rest))  # fmt: skip
        return self._compressed(self.rows.vectors(first)[1], chunks, count)

    def _compressed(
        self, sample: np.ndarray, more: Iterable[np.ndarray], expected: int
    ) -> CompressedIndex:
        return CompressedIndex(
            self.rows.dim, self.rows.vectors, sample, expected=expected, more=more
        )
