"""A query answered: the index's nearest rowids, turned into `Neighbor`s from their rows."""

from __future__ import annotations

import json
import math

import numpy as np

from service.gallery.index_policy import GalleryIndex
from service.gallery.items import Neighbor
from service.gallery.sqlite_rows import SqliteRows


def nearest(
    index: GalleryIndex, rows: SqliteRows, query: np.ndarray, k: int, skip: int | None = None
) -> list[Neighbor]:
    """The `k` items nearest to `query`, nearest first (the caller holds the gallery's lock).

    Args:
        index: the gallery's index.
        rows: its SQLite rows (ids, labels, metadata).
        query: (dim,) float32.
        k: how many neighbours (fewer if the gallery has fewer).
        skip: a rowid to leave out (the query item itself).
    """
    rows.require_open()
    n = min(k + (skip is not None), index.ntotal)
    if n == 0:
        return []
    # Skip by rowid, not by rank: an exact duplicate may rank before the item itself.
    hits = [(i, d) for i, d in index.search(query, n) if i != skip][:k]
    found = {
        rowid: rest for rowid, *rest in rows.by_rowids("id, label, metadata", [i for i, _ in hits])
    }
    return [
        Neighbor(
            id=found[rowid][0],
            # FAISS returns squared L2, which rounding can push slightly below zero.
            distance=math.sqrt(max(d, 0.0)),
            label=found[rowid][1],
            metadata=json.loads(found[rowid][2]),
        )
        for rowid, d in hits
        if rowid in found
    ]
