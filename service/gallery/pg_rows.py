"""The statements on the PostgreSQL gallery's rows (see `pg_schema` for the tables).

Writes run in the caller's transaction, under the shared projection lock (`lock_shared`):
an insert writes each distinct image of its batch once (the rows of an `add_vectors` call
share one), then its rows with one binary COPY, their reduced vectors filled when a
projection exists, then the item count; a delete removes the image with its last item.
Readers return `Item`s and `ItemRecord`s; `chunks` pages by `seq` (keyset), never OFFSET.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import PurePath

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from service.gallery.batches import Batch
from service.gallery.items import Item, ItemRecord, ModelBinding, check_binding
from service.gallery.pg_projection import Projection
from service.gallery.pg_schema import LOCK_SPACE, PROJECTION_LOCK

READ_CHUNK = 256  # rows per keyset page of `chunks` (4 MB of 4096-d vectors, plus images)
ITEM_COLUMNS = "i.id, i.label, i.metadata, i.created_at, g.ext, g.sha256"
ITEMS = "gallery_items i JOIN gallery_images g USING (image_id)"


def _as_is(text: str) -> str:
    return text


def item_of(row: Sequence, vector: np.ndarray | None = None) -> Item:
    """An `Item` from the ITEM_COLUMNS of a row."""
    item_id, label, metadata, created_at, ext, sha256 = row[:6]
    return Item(id=item_id, label=label, metadata=metadata, created_at=created_at,
                image_ext=ext, image_sha256=sha256, vector=vector)  # fmt: skip


# ----------------------------------------------------------------- locks and checks


def lock_shared(conn: psycopg.Connection) -> None:
    """The shared projection lock, for this transaction (inserts, deletes)."""
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", (LOCK_SPACE, PROJECTION_LOCK))


def lock_exclusive(conn: psycopg.Connection) -> None:
    """The exclusive projection lock, for this transaction (projection, replace_vectors)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, PROJECTION_LOCK))


def state(
    conn: psycopg.Connection, model_sha256: str | None = None, location: str = ""
) -> tuple[int, int | None]:
    """(item count, projection id or None), read in one statement.

    With `model_sha256` (the model that made the vectors at hand):
    GalleryModelChangedError if the gallery is now bound to another model (a model switch
    or `alexnet reindex` since).
    """
    count, model_id, stored_sha256, dim, projection_id = conn.execute(
        "SELECT item_count, model_id, model_sha256, dim,"
        " (SELECT max(projection_id) FROM gallery_projection) FROM gallery_meta"
    ).fetchone()
    if model_sha256 is not None:
        check_binding(ModelBinding(model_id, stored_sha256, dim), model_sha256, location)
    return count, projection_id


def ids(conn: psycopg.Connection) -> list[str]:
    """Every stored id, in insertion order."""
    return [i for (i,) in conn.execute("SELECT id FROM gallery_items ORDER BY seq")]


def count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT item_count FROM gallery_meta").fetchone()[0]


# ----------------------------------------------------------------- writes


def insert(
    conn: psycopg.Connection, batch: Batch, images: dict[str, bytes],
    projection: Projection | None,
) -> int:  # fmt: skip
    """Insert a checked batch (its rows name their image by file name, `images` maps the
    names to bytes) in the caller's transaction; the new item count.

    Each distinct image (same bytes, same extension) is stored once.
    """
    image_ids: dict[tuple[str, str], int] = {}
    for _, _, _, _, name, digest in batch.rows:
        key = (PurePath(name).suffix, digest)
        if key not in image_ids:
            image_ids[key] = conn.execute(
                "INSERT INTO gallery_images (ext, sha256, data) VALUES (%s, %s, %s)"
                " RETURNING image_id",
                (key[0], digest, images[name]),
            ).fetchone()[0]
    reduced = projection.apply(batch.vectors) if projection is not None else None
    vectors = batch.vectors.astype(">f4")  # the dumper then sends each row as it is
    with (
        conn.cursor(binary=True) as cur,
        cur.copy(
            "COPY gallery_items (id, label, metadata, created_at, image_id, vector, reduced)"
            " FROM STDIN (FORMAT BINARY)"
        ) as cp,
    ):
        cp.set_types(["text", "text", "jsonb", "text", "int8", "vector", "vector"])
        for j, (item_id, label, metadata, created_at, name, digest) in enumerate(batch.rows):
            image_id = image_ids[(PurePath(name).suffix, digest)]
            cp.write_row((
                item_id, label, Jsonb(metadata, dumps=_as_is), created_at, image_id,
                vectors[j], None if reduced is None else reduced[j],
            ))  # fmt: skip
    return conn.execute(
        "UPDATE gallery_meta SET item_count = item_count + %s RETURNING item_count",
        (len(batch.rows),),
    ).fetchone()[0]


def delete(conn: psycopg.Connection, id: str) -> bool:
    """Delete an item and, if no other item shares it, its image; False if there is none.

    The image row is locked before looking for other users of it, so two deletes of the
    last two items sharing an image cannot both leave it behind.
    """
    row = conn.execute(
        "DELETE FROM gallery_items WHERE id = %s RETURNING image_id", (id,)
    ).fetchone()
    if row is None:
        return False
    conn.execute("SELECT 1 FROM gallery_images WHERE image_id = %s FOR UPDATE", row)
    conn.execute(
        "DELETE FROM gallery_images WHERE image_id = %(i)s"
        " AND NOT EXISTS (SELECT 1 FROM gallery_items WHERE image_id = %(i)s)",
        {"i": row[0]},
    )
    conn.execute("UPDATE gallery_meta SET item_count = item_count - 1")
    return True


def replace_vectors(conn: psycopg.Connection, vectors: dict[str, np.ndarray]) -> None:
    """Set the vector of every item (exactly the stored ids, else ValueError) and clear
    their reduced vectors, in the caller's transaction (exclusive lock held)."""
    stored = {i for (i,) in conn.execute("SELECT id FROM gallery_items")}
    missing, unknown = stored - vectors.keys(), vectors.keys() - stored
    if missing or unknown:
        raise ValueError(
            f"replace_vectors needs a vector for each of the {len(stored)} items and "
            f"no others: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
            f"{len(unknown)} unknown (e.g. {sorted(unknown)[:3]})"
        )
    conn.execute(
        "CREATE TEMP TABLE new_vectors (id text PRIMARY KEY, vector vector) ON COMMIT DROP"
    )
    with (
        conn.cursor(binary=True) as cur,
        cur.copy("COPY new_vectors (id, vector) FROM STDIN (FORMAT BINARY)") as cp,
    ):
        cp.set_types(["text", "vector"])
        for item_id, vector in vectors.items():
            cp.write_row((item_id, vector))
    conn.execute(
        "UPDATE gallery_items i SET vector = n.vector, reduced = NULL"
        " FROM new_vectors n WHERE i.id = n.id"
    )
    conn.execute("DROP TABLE new_vectors")


# ----------------------------------------------------------------- reads


def item(conn: psycopg.Connection, id: str, with_vector: bool) -> Item | None:
    columns = f"{ITEM_COLUMNS}, i.vector" if with_vector else ITEM_COLUMNS
    with conn.cursor(binary=True) as cur:
        row = cur.execute(f"SELECT {columns} FROM {ITEMS} WHERE i.id = %s", (id,)).fetchone()
    if row is None:
        return None
    return item_of(row, row[6] if with_vector else None)


def image(conn: psycopg.Connection, id: str) -> tuple[bytes, str] | None:
    with conn.cursor(binary=True) as cur:
        return cur.execute(f"SELECT g.data, g.ext FROM {ITEMS} WHERE i.id = %s", (id,)).fetchone()


def page(conn: psycopg.Connection, offset: int, limit: int) -> tuple[list[Item], int]:
    """`limit` items from `offset` in insertion order, and the item count (one statement:
    one snapshot)."""
    rows = conn.execute(
        f"SELECT m.item_count, p.* FROM gallery_meta m LEFT JOIN LATERAL ("
        f" SELECT {ITEM_COLUMNS} FROM {ITEMS} ORDER BY i.seq LIMIT %s OFFSET %s) p ON true",
        (limit, offset),
    ).fetchall()
    total = rows[0][0]
    return [item_of(row[1:]) for row in rows if row[1] is not None], total


def known_ids(conn: psycopg.Connection, ids: list[str]) -> set[str]:
    rows = conn.execute("SELECT id FROM gallery_items WHERE id = ANY(%s)", (ids,))
    return {i for (i,) in rows}


def chunk(conn: psycopg.Connection, columns: str, after: int) -> list[tuple]:
    """READ_CHUNK rows (seq, *columns) after `after` in insertion order (a keyset page).

    `columns` is a constant of this package, never input.
    """
    with conn.cursor(binary=True) as cur:
        return cur.execute(
            f"SELECT i.seq, {columns} FROM {ITEMS} WHERE i.seq > %s ORDER BY i.seq LIMIT %s",
            (after, READ_CHUNK),
        ).fetchall()


def images_of(conn: psycopg.Connection, image_ids: list[int]) -> dict[int, bytes]:
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(
            "SELECT image_id, data FROM gallery_images WHERE image_id = ANY(%s)", (image_ids,)
        )
        return dict(rows.fetchall())


def records(rows: list[tuple], images: dict[int, bytes]) -> Iterator[ItemRecord]:
    """ItemRecords of `chunk` rows of RECORD_COLUMNS."""
    for _, item_id, label, metadata, created_at, ext, image_id, vector in rows:
        yield ItemRecord(id=item_id, label=label, metadata=metadata, created_at=created_at,
                         image_bytes=images[image_id], image_ext=ext, vector=vector)  # fmt: skip


RECORD_COLUMNS = "i.id, i.label, i.metadata, i.created_at, g.ext, i.image_id, i.vector"
