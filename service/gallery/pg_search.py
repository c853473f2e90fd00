"""A query answered in PostgreSQL: exact distances, nearest first.

Up to `exact_max` items (or while there is no projection) the scan is exact:
`ORDER BY vector <-> q LIMIT k` over every row. Above, the HNSW index on the 256-d
`reduced` vectors gives `candidates(k)` rows, which are re-ranked by the exact `<->` on the
full vectors: the distances returned are always exact, only the candidate set is
approximate. The caller runs it in a REPEATABLE READ transaction, so the projection that
made the query's reduced vector is the one the rows' were made with.
"""

from __future__ import annotations

import numpy as np
import psycopg

from service.gallery.items import Neighbor
from service.gallery.pg_projection import Projection

CANDIDATES = 64  # the HNSW candidates re-ranked for k <= CANDIDATES // 4
EF_SEARCH_MAX = 1000  # pgvector's limit of hnsw.ef_search


def candidates(k: int) -> int:
    """How many HNSW candidates a search of `k` (+1 for exclude_self) re-ranks."""
    return max(CANDIDATES, 4 * k)


def nearest(
    conn: psycopg.Connection, query: np.ndarray, k: int, projection: Projection | None,
    skip: str | None = None,
) -> list[Neighbor]:  # fmt: skip
    """The `k` items nearest to `query`, nearest first, leaving out the id `skip`.

    Args:
        projection: None: an exact scan; else the HNSW candidates of `projection.apply(query)`
            re-ranked exactly.
    """
    limit = k + (skip is not None)
    if projection is None:
        rows = conn.execute(
            "SELECT id, label, metadata, vector <-> %s AS d FROM gallery_items ORDER BY d LIMIT %s",
            (query, limit),
        ).fetchall()
    else:
        n = candidates(limit)
        # Past ef_search, pgvector 0.8 goes on scanning instead of stopping short.
        conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, true),"
            " set_config('hnsw.iterative_scan', 'relaxed_order', true)",
            (str(min(n, EF_SEARCH_MAX)),),
        )
        reduced = projection.apply(query[None, :])[0]
        rows = conn.execute(
            "SELECT id, label, metadata, d FROM ("
            " SELECT id, label, metadata, vector <-> %s AS d FROM gallery_items"
            " ORDER BY reduced <-> %s LIMIT %s) c ORDER BY d LIMIT %s",
            (query, reduced, n, limit),
        ).fetchall()
    # Skip by id, not by rank: an exact duplicate may rank before the item itself.
    return [
        Neighbor(id=i, distance=float(d), label=label, metadata=metadata)
        for i, label, metadata, d in rows
        if i != skip
    ][:k]
