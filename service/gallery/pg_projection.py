"""The PCA projection that makes 4096-d vectors searchable by pgvector's HNSW (at most 2,000
dimensions): fitted once, stored in the database, the same for every replica.

A projection is made when a gallery first holds more than `exact_max` items, by whichever
replica sees that first (`ensure`), under the exclusive form of the projection advisory lock:
fitted on a seeded sample of at most SAMPLE stored vectors, written to `gallery_projection`
(mean and components as little-endian float32 bytea), `reduced` filled for every row, then
the HNSW index built - all in one transaction. Inserts and deletes take the shared form of
the lock and fill `reduced` of their rows with the projection they read under it, so once a
projection exists no row is without its reduced vector. `replace_vectors` (another model)
drops it and makes a new one in its own transaction.

Each process keeps the projection it last read (`ProjectionCache`), keyed by its id: a new
id (another replica refitted) is read again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import psycopg

from service.gallery.pg_schema import LOCK_SPACE, PROJECTION_LOCK, REDUCED_DIM

log = logging.getLogger(__name__)

SAMPLE = 20_000  # vectors the PCA is fitted on, at most (a seeded sample)
OVERSAMPLE, POWER_ITERATIONS = 16, 2  # randomized SVD (Halko et al.)
FILL_CHUNK = 2048  # rows read, projected and written back at a time
INDEX = "gallery_items_reduced_hnsw"
BUILD_MEMORY = "512MB"  # maintenance_work_mem of the HNSW build: the graph fits in it


@dataclass(frozen=True)
class Projection:
    """x -> (x - mean) @ components.T: (n, dim) -> (n, REDUCED_DIM), float32."""

    id: int
    mean: np.ndarray  # (dim,)
    components: np.ndarray  # (REDUCED_DIM, dim), orthonormal rows (zero rows past the rank)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((vectors - self.mean) @ self.components.T, dtype=np.float32)


def fit(sample: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components) of the REDUCED_DIM principal directions of `sample` (n, dim).

    A seeded randomized SVD (Halko et al.: a range found with a few power iterations),
    exact when the sample has few rows or few columns. Only small symmetric eigenproblems
    (at most REDUCED_DIM + OVERSAMPLE wide, in float64) are solved: LAPACK's QR and SVD of
    tall matrices were seconds slower on a busy 2-core machine.
    """
    x = np.asarray(sample, dtype=np.float32)
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    x = x - mean
    n, dim = x.shape
    rank, width = min(REDUCED_DIM, n, dim), REDUCED_DIM + OVERSAMPLE
    if n <= width:  # the rows span every direction there is
        vt = _top_right_vectors(x.astype(np.float64), rank)
    elif dim <= 2 * width:  # small vectors: the covariance itself
        w, v = np.linalg.eigh(x.T.astype(np.float64) @ x)
        vt = v[:, np.argsort(w)[::-1][:rank]].T
    else:
        y = x @ np.random.default_rng(seed).standard_normal((dim, width)).astype(np.float32)
        for _ in range(POWER_ITERATIONS):
            y = x @ _orthonormal(x.T @ _orthonormal(y))
        vt = _top_right_vectors(_orthonormal(y).T.astype(np.float64) @ x, rank)
    components = np.zeros((REDUCED_DIM, dim), np.float32)
    components[: len(vt)] = vt
    return mean, components


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of `y` (tall), from its small Gram matrix."""
    y64 = y.astype(np.float64)
    w, v = np.linalg.eigh(y64.T @ y64)
    keep = w > w.max() * 1e-12
    return (y64 @ (v[:, keep] / np.sqrt(w[keep]))).astype(np.float32)


def _top_right_vectors(b: np.ndarray, rank: int) -> np.ndarray:
    """The top `rank` right singular vectors of a wide `b` (m, dim), as rows."""
    w, u = np.linalg.eigh(b @ b.T)
    order = np.argsort(w)[::-1][:rank]
    w, u = w[order], u[:, order]
    keep = w > max(w[0], 0.0) * 1e-12 if len(w) else w > 0
    return (u[:, keep].T @ b) / np.sqrt(w[keep])[:, None]


def current_id(conn: psycopg.Connection) -> int | None:
    """The id of the projection in force, or None."""
    row = conn.execute("SELECT max(projection_id) FROM gallery_projection").fetchone()
    return None if row is None else row[0]


class ProjectionCache:
    """The projection this process last read, re-read when the database has another id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Projection | None = None

    def get(self, conn: psycopg.Connection, projection_id: int | None) -> Projection | None:
        """The projection `projection_id` (read on `conn` if not the one held), or None."""
        if projection_id is None:
            return None
        held = self._held
        if held is not None and held.id == projection_id:
            return held
        row = conn.execute(
            "SELECT mean, components FROM gallery_projection WHERE projection_id = %s",
            (projection_id,),
        ).fetchone()
        if row is None:  # replaced since the caller read the id: it reads again
            raise RuntimeError(f"projection {projection_id} vanished")
        mean = np.frombuffer(row[0], dtype="<f4").astype(np.float32)
        components = np.frombuffer(row[1], dtype="<f4").astype(np.float32).reshape(-1, len(mean))
        projection = Projection(projection_id, mean, components)
        with self._lock:
            self._held = projection
        return projection


def ensure(conn: psycopg.Connection, exact_max: int, cache: ProjectionCache) -> bool:
    """Make the projection if the gallery holds more than `exact_max` items and has none, in
    one transaction under the exclusive projection lock (looked at without the lock first:
    opening a replica does not wait for inserts in flight); True if this call made it."""

    def needed() -> tuple[bool, str]:
        count, sha = conn.execute("SELECT item_count, model_sha256 FROM gallery_meta").fetchone()
        return count > exact_max and current_id(conn) is None, sha

    if not needed()[0]:
        return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, PROJECTION_LOCK))
        wanted, model_sha256 = needed()
        if not wanted:  # another replica made it meanwhile
            return False
        build(conn, model_sha256, cache)
    return True


def drop(conn: psycopg.Connection) -> None:
    """Remove the projection and its index (caller's transaction, exclusive lock held); the
    caller clears or rewrites every row's `reduced` in the same transaction."""
    conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
    conn.execute("DELETE FROM gallery_projection")


def build(conn: psycopg.Connection, model_sha256: str, cache: ProjectionCache) -> Projection:
    """Fit a projection on a seeded sample of the stored vectors, store it, fill `reduced`
    of every row and build the HNSW index; in the caller's transaction, which holds the
    exclusive projection lock (no insert or delete runs meanwhile)."""
    started = time.perf_counter()
    conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
    conn.execute("DELETE FROM gallery_projection")
    seqs = np.array(
        [s for (s,) in conn.execute("SELECT seq FROM gallery_items ORDER BY seq")], np.int64
    )
    picked = np.sort(np.random.default_rng(0).permutation(len(seqs))[:SAMPLE])
    sample = _vectors_of(conn, seqs[picked])
    if not len(sample):
        raise ValueError("no vectors to fit a projection on")
    mean, components = fit(sample)
    del sample
    fitted = time.perf_counter()
    (projection_id,) = conn.execute(
        "INSERT INTO gallery_projection (model_sha256, sample_size, mean, components)"
        " VALUES (%s, %s, %s, %s) RETURNING projection_id",
        (model_sha256, len(picked), mean.astype("<f4").tobytes(),
         components.astype("<f4").tobytes()),
    ).fetchone()  # fmt: skip
    projection = Projection(projection_id, mean, components)
    _fill_reduced(conn, projection)
    filled = time.perf_counter()
    conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (BUILD_MEMORY,))
    conn.execute(f"CREATE INDEX {INDEX} ON gallery_items USING hnsw (reduced vector_l2_ops)")
    log.info(
        "gallery projection %d: %d items, fitted on %d in %.1f s, reduced filled in %.1f s, "
        "HNSW built in %.1f s", projection_id, len(seqs), len(picked), fitted - started,
        filled - fitted, time.perf_counter() - filled,
    )  # fmt: skip
    cache.get(conn, projection_id)
    return projection


def _vectors_of(conn: psycopg.Connection, seqs: np.ndarray) -> np.ndarray:
    """The vectors of these seqs (sorted), stacked (len(seqs), dim) float32."""
    parts = []
    with conn.cursor(binary=True) as cur:
        for start in range(0, len(seqs), FILL_CHUNK):
            chunk = seqs[start : start + FILL_CHUNK].tolist()
            cur.execute(
                "SELECT vector FROM gallery_items WHERE seq = ANY(%s) ORDER BY seq", (chunk,)
            )
            parts += [v for (v,) in cur]
    return np.stack(parts) if parts else np.empty((0, 0), np.float32)


def _fill_reduced(conn: psycopg.Connection, projection: Projection) -> None:
    """Set `reduced` of every row: read in chunks, projected here, copied into a temporary
    table, then one UPDATE."""
    conn.execute(
        f"CREATE TEMP TABLE reduced_fill (seq bigint PRIMARY KEY, reduced vector({REDUCED_DIM}))"
        " ON COMMIT DROP"
    )
    last = 0
    with conn.cursor(binary=True) as cur:
        while True:
            cur.execute(
                "SELECT seq, vector FROM gallery_items WHERE seq > %s ORDER BY seq LIMIT %s",
                (last, FILL_CHUNK),
            )
            rows = cur.fetchall()
            if not rows:
                break
            reduced = projection.apply(np.stack([v for _, v in rows]))
            with cur.copy("COPY reduced_fill (seq, reduced) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int8", "vector"])
                for (seq, _), r in zip(rows, reduced, strict=True):
                    cp.write_row((seq, r))
            last = rows[-1][0]
    conn.execute(
        "UPDATE gallery_items i SET reduced = f.reduced FROM reduced_fill f WHERE i.seq = f.seq"
    )
    conn.execute("DROP TABLE reduced_fill")
