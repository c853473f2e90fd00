"""The gallery's rows: the statements on the `items` table (see `sqlite_db` for the rest).

Readers return tuples whose first column is the rowid (the FAISS id); vectors are stored as
little-endian float32 blobs. Every write is one transaction that also counts one change
(`sqlite_db.bump`); a delete logs its rowid in `deleted` in the same transaction. Rowids are
never reused. `SqliteRows` is not thread-safe: the gallery's lock serialises its calls.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np

from core.constants import GALLERY_DB_FILE
from service.gallery.items import ModelBinding
from service.gallery.sqlite_db import (
    RowsVersion,
    bump,
    connect,
    rows_version,
    set_meta,
    transaction,
)

READ_CHUNK = 1024  # rows per query when reading every row (16 MB of 4096-d vectors)
SQL_VARS_CHUNK = 500  # old SQLite builds allow only 999 bound parameters per statement
ITEM_COLUMNS = "id, label, metadata, created_at, image_file, image_sha256"
_NO_GUARD = nullcontext()


def vector_blob(vector: np.ndarray) -> bytes:
    """A (dim,) vector as stored: little-endian float32 bytes."""
    return vector.astype("<f4").tobytes()


def blob_vector(blob: bytes) -> np.ndarray:
    """A stored vector as a (dim,) float32 array (a copy: writable)."""
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


class SqliteRows:
    """The open database of one gallery folder; use `SqliteRows.open`.

    Row readers return tuples whose first column is the rowid (the FAISS id).
    """

    def __init__(self, db: sqlite3.Connection, root: Path, binding: ModelBinding) -> None:
        """Internal: use `SqliteRows.open`."""
        self.root, self.binding = root, binding
        self._db: sqlite3.Connection | None = db

    @classmethod
    def open(cls, root: Path, binding: ModelBinding) -> SqliteRows:
        """Open (or create) `root/gallery.sqlite3` for the model in `binding`.

        Raises:
            GalleryModelMismatchError: the rows hold vectors of another model.
        """
        return cls(connect(root, binding), root, binding)

    @property
    def closed(self) -> bool:
        return self._db is None

    @property
    def db(self) -> sqlite3.Connection:
        """The connection; RuntimeError once closed."""
        if self._db is None:
            raise RuntimeError(f"gallery {self.root} is closed")
        return self._db

    def require_open(self) -> None:
        """RuntimeError once closed."""
        _ = self.db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def dim(self) -> int:
        return self.binding.dim

    # ----------------------------------------------------------------- reads

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def chunks(
        self, columns: str, guard: AbstractContextManager = _NO_GUARD, after: int = 0
    ) -> Iterator[list[tuple]]:
        """Every row as (rowid, *columns), in rowid order, READ_CHUNK rows at a time.

        Args:
            columns: a constant of this package (e.g. "image_file, vector"), never input.
            guard: held while each chunk is read, not while it is used (the gallery's lock,
                for a reader that lets writers in between chunks).
            after: only the rows above this rowid.
        """
        last = after
        while True:
            with guard:
                rows = self.db.execute(
                    f"SELECT rowid, {columns} FROM items WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (last, READ_CHUNK),
                ).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def by_rowids(self, columns: str, rowids: Iterable[int]) -> list[tuple]:
        """The rows (rowid, *columns) of these rowids; missing ones are left out.

        `columns` is a constant of this package, never input.
        """
        ids, rows = [int(i) for i in rowids], []
        for start in range(0, len(ids), SQL_VARS_CHUNK):
            chunk = ids[start : start + SQL_VARS_CHUNK]
            marks = ",".join("?" * len(chunk))  # only placeholders are formatted in
            rows += self.db.execute(
                f"SELECT rowid, {columns} FROM items WHERE rowid IN ({marks})", chunk
            )
        return rows

    def stack(self, rows: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, dim) float32, rowids (n,) int64) of rows whose first and last
        columns are the rowid and the vector blob."""
        size = self.dim * 4
        for rowid, *_, blob in rows:
            if len(blob) != size:
                raise RuntimeError(
                    f"{self.root / GALLERY_DB_FILE}: row {rowid} has a vector of {len(blob)} "
                    f"bytes, expected {size} ({self.dim} float32)"
                )
        vectors = np.frombuffer(b"".join(r[-1] for r in rows), dtype="<f4").reshape(-1, self.dim)
        return vectors, np.array([r[0] for r in rows], dtype=np.int64)

    def vectors(self, rowids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the rowids found, their vectors): the `fetch` of a compressed index."""
        vectors, found = self.stack(self.by_rowids("vector", rowids))
        return found, vectors

    def version(self) -> RowsVersion:
        """Where the rows stand: uid, change count, last replace_vectors, last rowid."""
        return rows_version(self.db)

    def count_after(self, rowid: int) -> int:
        """How many rows lie above this rowid (added after it was the last)."""
        return self.db.execute("SELECT COUNT(*) FROM items WHERE rowid > ?", (rowid,)).fetchone()[0]

    def deleted_since(self, changes: int) -> np.ndarray:
        """The rowids deleted by the changes after `changes`."""
        rows = self.db.execute("SELECT rowid FROM deleted WHERE at_change > ?", (changes,))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def image_files(self) -> set[str]:
        """The image files the rows name (read from the image_file index, not the rows)."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT image_file FROM items")}

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        return [r[0] for r in self.db.execute("SELECT id FROM items ORDER BY rowid")]

    def rowids(self) -> np.ndarray:
        return np.array([r[0] for r in self.db.execute("SELECT rowid FROM items")], np.int64)

    def rowids_of_every(self, ids: Iterable[str]) -> np.ndarray:
        """The rowids of `ids`, in their order; ValueError unless `ids` are exactly the
        stored ids (`replace_vectors`: a partial reindex would mix two models' vectors)."""
        ids = list(ids)
        rowid_of = dict(self.db.execute("SELECT id, rowid FROM items").fetchall())
        missing, unknown = rowid_of.keys() - set(ids), set(ids) - rowid_of.keys()
        if missing or unknown:
            raise ValueError(
                f"replace_vectors needs a vector for each of the {len(rowid_of)} items and "
                f"no others: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
                f"{len(unknown)} unknown (e.g. {sorted(unknown)[:3]})"
            )
        return np.array([rowid_of[k] for k in ids], dtype=np.int64)

    def item(self, id: str, with_vector: bool) -> tuple[tuple, np.ndarray | None] | None:
        """(the ITEM_COLUMNS of this id, its vector if `with_vector`), or None."""
        row = self.db.execute(
            f"SELECT {ITEM_COLUMNS}, vector FROM items WHERE id = ?", (id,)
        ).fetchone()
        if row is None:
            return None
        return row[:-1], blob_vector(row[-1]) if with_vector else None

    def page(self, offset: int, limit: int) -> tuple[list[tuple], int]:
        """The ITEM_COLUMNS of `limit` rows from `offset` in rowid order, and the row count."""
        rows = self.db.execute(
            f"SELECT {ITEM_COLUMNS} FROM items ORDER BY rowid LIMIT ? OFFSET ?", (limit, offset)
        ).fetchall()
        return rows, self.count()

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` are stored."""
        found: set[str] = set()
        ids = list(ids)
        for start in range(0, len(ids), SQL_VARS_CHUNK):
            chunk = ids[start : start + SQL_VARS_CHUNK]
            marks = ",".join("?" * len(chunk))  # only placeholders are formatted in
            found.update(r[0] for r in self.db.execute(
                f"SELECT id FROM items WHERE id IN ({marks})", chunk))  # fmt: skip
        return found

    def image_file(self, id: str) -> str | None:
        row = self.db.execute("SELECT image_file FROM items WHERE id = ?", (id,)).fetchone()
        return None if row is None else row[0]

    def vector_of(self, id: str) -> tuple[int, np.ndarray] | None:
        """(rowid, vector) of this id, or None."""
        row = self.db.execute("SELECT rowid, vector FROM items WHERE id = ?", (id,)).fetchone()
        return None if row is None else (row[0], blob_vector(row[1]))

    # ----------------------------------------------------------------- writes

    def insert(self, rows: Sequence[tuple], vectors: np.ndarray) -> np.ndarray:
        """Insert rows in one transaction; returns their rowids.

        Args:
            rows: (id, label, metadata JSON, created_at, image_file, image_sha256) each.
            vectors: (len(rows), dim) float32, their vectors.
        """
        with transaction(self.db) as db:
            # One more than the largest rowid ever given: a deleted one is never reused.
            largest = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM items").fetchone()[0]
            first = max(largest, rows_version(db).last_rowid) + 1
            db.executemany(
                "INSERT INTO items (rowid, id, label, metadata, created_at, image_file, "
                "image_sha256, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((first + i, *row, vector_blob(vector))
                 for i, (row, vector) in enumerate(zip(rows, vectors, strict=True))),
            )  # fmt: skip
            bump(db)
            set_meta(db, {"last_rowid": str(first + len(rows) - 1)})
        return np.arange(first, first + len(rows), dtype=np.int64)

    def delete(self, id: str) -> tuple[int, str | None] | None:
        """Delete the row of this id: None if there is none, else (its rowid, its image file
        if no other row names that file, else None)."""
        with transaction(self.db) as db:
            row = db.execute("SELECT rowid, image_file FROM items WHERE id = ?", (id,)).fetchone()
            if row is None:
                return None
            rowid, image_file = row
            db.execute("DELETE FROM items WHERE rowid = ?", (rowid,))
            db.execute(
                "INSERT OR REPLACE INTO deleted (rowid, at_change) VALUES (?, ?)", (rowid, bump(db))
            )
            shared = db.execute(
                "SELECT 1 FROM items WHERE image_file = ? LIMIT 1", (image_file,)
            ).fetchone()
        return rowid, None if shared else image_file

    def replace_vectors(
        self, rowids: np.ndarray, vectors: Sequence[np.ndarray], binding: ModelBinding
    ) -> None:
        """Set the vectors of these rowids and bind the rows to `binding`'s model, at once."""
        with transaction(self.db) as db:
            db.executemany(
                "UPDATE items SET vector = ? WHERE rowid = ?",
                (
                    (vector_blob(v), rowid)
                    for rowid, v in zip(rowids.tolist(), vectors, strict=True)
                ),
            )
            set_meta(db, {"model_sha256": binding.model_sha256, "model_id": binding.model_id,
                          "vectors_at": str(bump(db))})  # fmt: skip
        self.binding = binding

    def prune_deleted(self, changes: int) -> None:
        """Forget the deletes up to change `changes` (no index file needs them any more)."""
        if self.db.execute(
            "SELECT 1 FROM deleted WHERE at_change <= ? LIMIT 1", (changes,)
        ).fetchone():
            with transaction(self.db) as db:
                db.execute("DELETE FROM deleted WHERE at_change <= ?", (changes,))
