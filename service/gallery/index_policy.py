"""The gallery's in-memory index, and when it is exact and when compressed.

Up to `exact_max` items the index is exact (`ExactIndex`); above, and from MIN_TRAIN items
on, compressed (`CompressedIndex`, re-ranked with the full vectors read from SQLite). The
choice is made when the index is built: at open, when an add crosses `exact_max` and by
`replace_vectors`. A delete never switches back; the next open decides again.

A compressed index is trained on one seeded random sample of the vectors
(`training_sample`), whether they are read from SQLite or held in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

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
    """

    def __init__(self, rows: SqliteRows, exact_max: int) -> None:
        self.rows, self.exact_max = rows, exact_max
        self._index: Index = ExactIndex(rows.dim)

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
        """Index every stored row (at open); returns the image files the rows name, read in
        the same pass (for the orphan sweep)."""
        self._index, known = self._build()
        return known

    def add(self, vectors: np.ndarray, rowids: np.ndarray) -> None:
        """Add committed rows; an exact index that grows past `exact_max` is replaced by a
        compressed one of every row (if that fails the exact one goes on serving)."""
        self._index.add(vectors, rowids)
        if self._index.kind != "exact" or not self.wants_compressed(self._index.ntotal):
            return
        try:
            compressed, _ = self._build()
        except Exception:  # noqa: BLE001 - logged; the rows are committed, exact still answers
            log.exception("gallery %s: could not build the compressed index", self.rows.root)
            return
        self._index = compressed
        log.info("gallery %s: %d items, switched to the compressed index", self.rows.root,
                 compressed.ntotal)  # fmt: skip

    def remove(self, rowids: np.ndarray) -> None:
        self._index.remove(rowids)

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
        self._index = index

    def clear(self) -> None:
        """Drop every vector (the gallery is closed)."""
        self._index = ExactIndex(self.rows.dim)

    def wants_compressed(self, count: int) -> bool:
        return count > self.exact_max and count >= MIN_TRAIN

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
