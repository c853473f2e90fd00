"""`PgGallery`: the gallery in PostgreSQL + pgvector, shared by any number of replicas.

Everything is in the database - rows, image bytes, full vectors, insertion order, the model
binding, the item count, the PCA projection - and nothing in a process can disagree with
another replica: what one `PgGallery` committed, another one's next call sees. The only
thing kept in memory is the projection last read, keyed by its id (`ProjectionCache`).

    pg_pool.py        the connection pool, the vector adapters, unreachable -> 503
    pg_schema.py      the tables, versioned migrations under an advisory lock, the binding
    pg_rows.py        the statements on the rows (COPY inserts, keyset reads)
    pg_projection.py  the 4096 -> 256 PCA projection, fitted once, and the HNSW index
    pg_search.py      exact scan, or HNSW candidates re-ranked by exact distance

A write that returns has committed. When the database cannot be reached every call raises
`GalleryUnavailableError` within a few seconds; the pool reconnects by itself once the
server is back. The URL's password never appears in a message (`location` is `shown(url)`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from core.constants import FC7_DIM, GALLERY_EXACT_MAX
from service.gallery import pg_rows
from service.gallery.batches import Batch, batch_of_items, batch_of_records, batch_of_vectors
from service.gallery.items import (
    GalleryUnavailableError,
    Item,
    ItemRecord,
    ModelBinding,
    Neighbor,
    NewItem,
    StoredImage,
    check_k,
    check_model,
    check_open,
    check_page,
    check_vectors,
    is_valid_id,
)
from service.gallery.location import shown
from service.gallery.pg_pool import (
    PROBLEM_TIMEOUT,
    ConnectionHealth,
    connect,
    make_pool,
    reason,
    unavailable,
)
from service.gallery.pg_projection import ProjectionCache, build, drop, ensure
from service.gallery.pg_schema import bind_model, migrate, read_binding
from service.gallery.pg_search import nearest

log = logging.getLogger(__name__)


class PgGallery:
    """A gallery in a PostgreSQL database; open with `PgGallery.open`. Thread-safe: each
    call takes its own connection from the pool."""

    def __init__(
        self, url: str, pool: ConnectionPool, health: ConnectionHealth, binding: ModelBinding,
        exact_max: int,
    ) -> None:  # fmt: skip
        """Internal: use `PgGallery.open`."""
        self._url, self._location = url, shown(url)
        self._pool: ConnectionPool | None = pool
        self._health, self._binding, self.exact_max = health, binding, exact_max
        self._projections = ProjectionCache()

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def open(
        cls,
        url: str,
        *,
        model_sha256: str,
        model_id: str,
        dim: int = FC7_DIM,
        exact_max: int = GALLERY_EXACT_MAX,
    ) -> PgGallery:
        """Open (or create) the gallery in the database at `url`, bound to a model.

        Applies the missing schema migrations (once, whichever replica comes first), records
        or checks the model binding, and makes the projection if the gallery is above
        `exact_max` items without one.

        Raises:
            GalleryModelMismatchError: the gallery holds vectors of another model.
            GalleryUnavailableError: the database cannot be reached.
            RuntimeError: the schema cannot be set up (e.g. no right to create the vector
                extension), or is newer than this code.
        """
        check_open(model_sha256, model_id, dim, exact_max)
        binding, location = ModelBinding(model_id, model_sha256, dim), shown(url)
        with unavailable(url, location):
            try:
                with connect(url) as conn, conn.transaction():
                    applied = migrate(conn, dim)
                    bind_model(conn, binding, location)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise  # unreachable: GalleryUnavailableError
            except psycopg.Error as e:  # e.g. not allowed to create the vector extension
                raise RuntimeError(
                    f"gallery database {location}: schema not set up: {reason(e, url)}"
                ) from None
            pool, health = make_pool(url, name=location)
        if applied:
            log.info("gallery %s: schema migrations %s applied", location, applied)
        gallery = cls(url, pool, health, binding, exact_max)
        try:
            gallery._ensure_projection()
            log.info(
                "gallery %s: %d item(s), model %s, %s search",
                location, len(gallery), model_id, gallery.index_kind,
            )  # fmt: skip
        except BaseException:
            gallery.close()
            raise
        return gallery

    def close(self) -> None:
        """Close the pool; further calls raise RuntimeError. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> PgGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; unreachable -> GalleryUnavailableError, closed -> RuntimeError."""
        pool = self._pool
        if pool is None:
            raise RuntimeError(f"gallery {self._location} is closed")
        with (
            unavailable(self._url, self._location, self._health),
            pool.connection(timeout=self._health.timeout) as conn,
        ):
            yield conn

    # ----------------------------------------------------------------- properties

    @property
    def location(self) -> str:
        """The database URL without its password."""
        return self._location

    @property
    def model_id(self) -> str:
        return self._binding.model_id

    @property
    def model_sha256(self) -> str:
        return self._binding.model_sha256

    @property
    def dim(self) -> int:
        return self._binding.dim

    @property
    def index_kind(self) -> str:
        """ "hnsw" (above `exact_max` items, with a projection) or "exact"."""
        with self._conn() as conn:
            count, projection_id = pg_rows.state(conn)
        return "hnsw" if projection_id is not None and count > self.exact_max else "exact"

    def __len__(self) -> int:
        """The item count: one row of `gallery_meta`, kept exact by every insert and delete."""
        with self._conn() as conn:
            return pg_rows.count(conn)

    def problem(self) -> str | None:
        """None when a trivial query answers within PROBLEM_TIMEOUT seconds, else why not."""
        pool = self._pool
        if pool is None:
            return f"gallery {self._location} is closed"
        try:
            with unavailable(self._url, self._location, self._health):
                with pool.connection(timeout=min(PROBLEM_TIMEOUT, self._health.timeout)) as conn:
                    conn.execute("SELECT 1")
        except (GalleryUnavailableError, RuntimeError) as e:
            return str(e)
        return None

    # ----------------------------------------------------------------- writes

    def add(self, items: list[NewItem], model_sha256: str | None = None) -> list[str]:
        """Store images with their vectors, all or none; committed once this returns.

        `model_sha256` is the model that made the vectors (default: the one this gallery
        was opened or last rebound with).

        Raises:
            ValueError: an item is invalid (nothing is written then).
            GalleryModelChangedError: the gallery holds another model's vectors now.
        """
        batch = batch_of_items(items, self.dim)
        self._store(batch, model_sha256=model_sha256)
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
        """Store vectors made elsewhere (the bench) that share one image, stored once, all
        or none, with one binary COPY; committed once this returns.

        Raises:
            ValueError: an input is invalid (nothing is written then).
        """
        batch = batch_of_vectors(vectors, self.dim, image_bytes, image_ext, labels, metadata)
        self._store(batch)
        return batch.ids

    def import_records(self, records: Sequence[ItemRecord]) -> None:
        """Store items with their ids and creation times kept (`alexnet gallery copy`), all
        or none.

        Raises:
            ValueError: a record is invalid or its id is already stored (nothing written).
        """
        batch = batch_of_records(records, self.dim)
        try:
            self._store(batch, check_new=True)
        except psycopg.errors.UniqueViolation:  # stored by another replica meanwhile
            raise ValueError("an id of the import is already stored") from None

    def _store(
        self, batch: Batch, check_new: bool = False, model_sha256: str | None = None
    ) -> None:
        """Insert a checked batch in one transaction under the shared projection lock, with
        the reduced vectors of the projection in force; then make the projection if this
        insert took the gallery above `exact_max` without one."""
        if not batch.rows:
            return
        images = dict(batch.files)
        with self._conn() as conn:
            with conn.transaction():
                pg_rows.lock_shared(conn)
                sha256 = model_sha256 or self._binding.model_sha256
                _, projection_id = pg_rows.state(conn, sha256, self._location)
                if check_new:
                    present = pg_rows.known_ids(conn, batch.ids)
                    if present:
                        raise ValueError(
                            f"{len(present)} id(s) already stored, e.g. {sorted(present)[0]}"
                        )
                projection = self._projections.get(conn, projection_id)
                count = pg_rows.insert(conn, batch, images, projection)
            if projection is None and count > self.exact_max:
                self._ensure_projection(conn)

    def _ensure_projection(self, conn: psycopg.Connection | None = None) -> None:
        """Make the projection if the gallery needs one. A failure is logged, not raised:
        the rows are committed, searches stay exact, and the next insert tries again."""
        try:
            if conn is None:
                with self._conn() as own:
                    ensure(own, self.exact_max, self._projections)
            else:
                ensure(conn, self.exact_max, self._projections)
        except Exception as e:  # noqa: BLE001 - logged; the search stays exact meanwhile
            log.warning("gallery %s: projection not made: %s", self._location, e)

    def remove(self, id: str) -> bool:
        """Delete an item (and its image, unless other items share it); False if none."""
        if not is_valid_id(id):
            return False
        with self._conn() as conn, conn.transaction():
            pg_rows.lock_shared(conn)
            return pg_rows.delete(conn, id)

    def replace_vectors(
        self, vectors: dict[str, np.ndarray], *, model_sha256: str, model_id: str
    ) -> None:
        """Swap every vector for one made by another model, and the binding with them, in one
        transaction; the projection is refitted on the new vectors in it (or dropped, at or
        below `exact_max` items).

        Raises:
            ValueError: a vector is invalid, or the ids are not exactly the gallery's.
        """
        check_model(model_sha256, model_id)
        checked = {k: check_vectors(v, self.dim, f"vector for {k!r}") for k, v in vectors.items()}
        binding = ModelBinding(model_id, model_sha256, self.dim)
        with self._conn() as conn, conn.transaction():
            pg_rows.lock_exclusive(conn)
            self._replace(conn, checked, binding)
        self._binding = binding

    def _replace(
        self, conn: psycopg.Connection, checked: dict[str, np.ndarray], binding: ModelBinding
    ) -> None:
        """replace_vectors in the caller's transaction, the exclusive lock held."""
        drop(conn)
        pg_rows.replace_vectors(conn, checked)
        conn.execute(
            "UPDATE gallery_meta SET model_sha256 = %s, model_id = %s",
            (binding.model_sha256, binding.model_id),
        )
        if len(checked) > self.exact_max:
            build(conn, binding.model_sha256, self._projections)

    def switch_vectors(
        self,
        vectors: dict[str, np.ndarray],
        embed: Callable[[list[tuple[str, bytes]]], dict[str, np.ndarray]],
        *,
        from_sha256: str,
        model_sha256: str,
        model_id: str,
    ) -> int:
        """The last step of a model switch, in one transaction under the exclusive lock
        (every replica's inserts and deletes wait for it): embed the items `vectors` lacks
        (added meanwhile, by any replica), then swap every vector and the binding.

        Args:
            vectors: id -> the new model's vector, made beforehand (ids deleted since are
                ignored).
            embed: (id, image bytes) of the missing items -> their new vectors.
            from_sha256: the model the gallery must still be bound to.
            model_sha256, model_id: the new model.

        Returns:
            How many items `embed` was given.

        Raises:
            GalleryModelChangedError: the gallery is no longer bound to `from_sha256`
                (another replica switched it meanwhile).
            ValueError: a vector is invalid or missing (the gallery is unchanged).
        """
        check_model(model_sha256, model_id)
        binding = ModelBinding(model_id, model_sha256, self.dim)
        with self._conn() as conn, conn.transaction():
            pg_rows.lock_exclusive(conn)
            pg_rows.state(conn, from_sha256, self._location)
            ids = pg_rows.ids(conn)
            missing = [i for i in ids if i not in vectors]
            made = embed([(i, pg_rows.image(conn, i)[0]) for i in missing]) if missing else {}
            checked = {
                i: check_vectors(vectors[i] if i in vectors else made.get(i), self.dim, i)
                for i in ids
            }
            self._replace(conn, checked, binding)
        self._binding = binding
        return len(missing)

    def active_binding(self) -> ModelBinding:
        """The model the gallery's vectors are made by now (read from the database: another
        replica may have switched it)."""
        with self._conn() as conn:
            found = read_binding(conn)
        if found is None:
            raise RuntimeError(f"gallery {self._location} has no binding")
        return found

    def rebind(self, binding: ModelBinding) -> None:
        """Follow a switch made by another replica: writes and searches now default to
        `binding` (GalleryModelChangedError unless the database is bound to it)."""
        with self._conn() as conn:
            pg_rows.state(conn, binding.model_sha256, self._location)
        self._binding = binding

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        with self._conn() as conn:
            return pg_rows.ids(conn)

    # ----------------------------------------------------------------- reads

    def get(self, id: str, with_vector: bool = False) -> Item | None:
        if not is_valid_id(id):
            return None
        with self._conn() as conn:
            return pg_rows.item(conn, id, with_vector)

    def image(self, id: str) -> StoredImage | None:
        if not is_valid_id(id):
            return None
        with self._conn() as conn:
            found = pg_rows.image(conn, id)
        return None if found is None else StoredImage(found[0], found[1])

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[Item], int]:
        """A page of items in insertion order, and the total number of items."""
        check_page(offset, limit)
        with self._conn() as conn:
            return pg_rows.page(conn, offset, limit)

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        valid = [i for i in ids if is_valid_id(i)]
        if not valid:
            return set()
        with self._conn() as conn:
            return pg_rows.known_ids(conn, valid)

    def iter_images(self) -> Iterator[tuple[str, bytes]]:
        """(id, image bytes) of every item in insertion order, a keyset page at a time."""
        held: dict[int, bytes] = {}
        for rows in self._chunks("i.id, i.image_id"):
            held = self._images(rows, held, column=2)
            for _, item_id, image_id in rows:
                yield item_id, held[image_id]

    def iter_records(self) -> Iterator[ItemRecord]:
        """Every item with its image and vector, in insertion order, a keyset page at a time."""
        held: dict[int, bytes] = {}
        for rows in self._chunks(pg_rows.RECORD_COLUMNS):
            held = self._images(rows, held, column=6)
            yield from pg_rows.records(rows, held)

    def _chunks(self, columns: str) -> Iterator[list[tuple]]:
        """Keyset pages of (seq, *columns); no connection is held between pages."""
        last = 0
        while True:
            with self._conn() as conn:
                rows = pg_rows.chunk(conn, columns, last)
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def _images(self, rows: list[tuple], held: dict[int, bytes], column: int) -> dict[int, bytes]:
        """The images of a page's rows (`column` holds the image_id), reusing those of the
        page before (the rows of an `add_vectors` call share one)."""
        wanted = {row[column] for row in rows}
        images = {i: held[i] for i in wanted if i in held}
        if missing := sorted(wanted - images.keys()):
            with self._conn() as conn:
                images |= pg_rows.images_of(conn, missing)
        return images

    def search(
        self, vector: np.ndarray, k: int = 10, model_sha256: str | None = None
    ) -> list[Neighbor]:
        """The `k` items nearest to `vector` by Euclidean distance (exact), nearest first.

        `model_sha256` is the model that made `vector` (default: the one this gallery was
        opened or last rebound with): GalleryModelChangedError if the gallery holds another
        model's vectors, checked in the search's snapshot.
        """
        query = check_vectors(vector, self.dim, "query")
        check_k(k)
        with self._conn() as conn, self._snapshot(conn, model_sha256) as projection:
            return nearest(conn, query, k, projection)

    def search_by_id(
        self, id: str, k: int = 10, exclude_self: bool = False
    ) -> list[Neighbor] | None:
        """The `k` items nearest to an item's vector; None if there is no such id."""
        check_k(k)
        if not is_valid_id(id):
            return None
        with self._conn() as conn, self._snapshot(conn) as projection:
            found = pg_rows.item(conn, id, with_vector=True)
            if found is None:
                return None
            return nearest(conn, found.vector, k, projection, id if exclude_self else None)

    @contextmanager
    def _snapshot(self, conn: psycopg.Connection, model_sha256: str | None = None) -> Iterator[Any]:
        """A read-only REPEATABLE READ transaction (the projection and the rows' reduced
        vectors from one snapshot), checked to hold the vectors of `model_sha256` (default:
        this gallery's binding); yields the projection to search with, or None for an
        exact scan."""
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            sha256 = model_sha256 or self._binding.model_sha256
            count, projection_id = pg_rows.state(conn, sha256, self._location)
            use = projection_id is not None and count > self.exact_max
            yield self._projections.get(conn, projection_id) if use else None


def stored_model(url: str) -> ModelBinding | None:
    """The model recorded in the gallery at `url`, or None if it has no gallery schema yet.

    Raises:
        GalleryUnavailableError: the database cannot be reached.
    """
    location = shown(url)
    with unavailable(url, location), connect(url) as conn:
        return read_binding(conn)
