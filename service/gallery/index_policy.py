"""Which index the gallery searches with, and how a compressed one is trained.

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


class IndexPolicy:
    """Builds the index of a gallery's rows: exact or compressed by their number.

    Args:
        rows: the gallery's SQLite rows (training samples, and the compressed index's
            re-ranking reads its full vectors there).
        exact_max: up to this many items the index is exact.
    """

    def __init__(self, rows: SqliteRows, exact_max: int) -> None:
        self.rows, self.exact_max = rows, exact_max

    def wants_compressed(self, count: int) -> bool:
        return count > self.exact_max and count >= MIN_TRAIN

    def empty_for_rows(self, count: int) -> Index:
        """An empty index for the `count` stored rows: exact, or compressed and trained on
        a sample of them."""
        if not self.wants_compressed(count):
            return ExactIndex(self.rows.dim)
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

    def for_vectors(self, vectors: list[np.ndarray], rowids: np.ndarray) -> Index:
        """An index holding these (dim,) vectors under their rowids, trained on them if
        compressed (`replace_vectors`: built before the rows change)."""
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

    def after_add(self, index: Index) -> Index:
        """`index`, or once an exact one has grown past `exact_max` a compressed one holding
        every row (if that fails the exact one goes on serving: the rows are committed)."""
        if index.kind != "exact" or not self.wants_compressed(index.ntotal):
            return index
        count = index.ntotal
        try:
            compressed = self.empty_for_rows(count)
            for rows in self.rows.chunks("vector"):
                compressed.add(*self.rows.stack(rows))
        except Exception:  # noqa: BLE001 - logged; the exact index still answers
            log.exception("gallery %s: could not build the compressed index", self.rows.root)
            return index
        log.info("gallery %s: %d items, switched to the compressed index", self.rows.root, count)
        return compressed

    def _compressed(
        self, sample: np.ndarray, more: Iterable[np.ndarray], expected: int
    ) -> CompressedIndex:
        return CompressedIndex(
            self.rows.dim, self.rows.vectors, sample, expected=expected, more=more
        )
