"""The gallery's SQLite database: schema, durability settings, the model binding.

    items  rowid, id, label, metadata (JSON), created_at, image_file, image_sha256,
           vector (little-endian float32 blob); indexed by image_file too (`add_vectors`
           gives many rows one file, removed with the last of them)
    meta   key -> value: schema, model_sha256, model_id, dim, and where the rows stand
           (`RowsVersion`): uid, changes, vectors_at, last_rowid
    deleted  rowid, at_change: the rows deleted, and by which change (for a persisted
           index to catch up; entries no index file needs any more are pruned at open)

SQLite is the source of truth. It runs in WAL mode with synchronous=FULL, so a committed
transaction survives a crash or a power cut; every write is one BEGIN IMMEDIATE ... COMMIT
(`transaction`). The rows are bound to the model that made their vectors: opening them for
another model raises `GalleryModelMismatchError`.

Every write transaction counts one more change (`bump`), in the same transaction, and
rowids are never reused (`last_rowid` keeps the largest ever given): so an index made at
change c and last rowid r is brought up to date by removing the rows deleted after c and
adding the rows above r, unless the vectors were replaced after c (`vectors_at`).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.constants import GALLERY_DB_FILE
from service.gallery.items import GalleryModelMismatchError, ModelBinding

SCHEMA_VERSION = "2"  # 2: the change count, the deleted log, the uid
SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    rowid INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    label TEXT,
    metadata TEXT NOT NULL,
    created_at TEXT,
    image_file TEXT NOT NULL,
    image_sha256 TEXT,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS deleted (rowid INTEGER PRIMARY KEY, at_change INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS items_image_file ON items (image_file);
"""


def connect(root: Path, binding: ModelBinding) -> sqlite3.Connection:
    """Open (or create) `root/gallery.sqlite3` for the model in `binding`: WAL mode,
    synchronous=FULL, the schema, the binding checked or recorded.

    Raises:
        GalleryModelMismatchError: the rows hold vectors of another model.
    """
    path = root / GALLERY_DB_FILE
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL mode for {path} (got {mode})")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        _bind_model(db, root, binding)
        _upgrade(db)
    except BaseException:
        db.close()
        raise
    return db


def stored_model(root: str | Path) -> ModelBinding | None:
    """The model recorded in the gallery at `root`, or None if there is no gallery there.

    Lets `alexnet reindex` open a gallery with its current model before replacing the vectors.
    """
    path = Path(root) / GALLERY_DB_FILE
    if not path.is_file():
        return None
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError:  # no meta table yet: created but never initialised
        return None
    finally:
        db.close()
    if "model_sha256" not in meta:
        return None
    return ModelBinding(meta["model_id"], meta["model_sha256"], int(meta["dim"]))


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # a failed COMMIT can leave it open
            db.execute("ROLLBACK")
        raise


def set_meta(db: sqlite3.Connection, values: dict[str, str]) -> None:
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())


@dataclass(frozen=True)
class RowsVersion:
    """Where the rows stand, from the `meta` table.

    Attributes:
        uid: this gallery's random id (it follows the folder when it is copied).
        changes: write transactions committed so far (insert, delete, replace_vectors).
        vectors_at: `changes` after the last `replace_vectors` (0: never).
        last_rowid: the largest rowid ever given (0: none); rowids are never reused.
    """

    uid: str
    changes: int
    vectors_at: int
    last_rowid: int


def rows_version(db: sqlite3.Connection) -> RowsVersion:
    """The rows' `RowsVersion` (inside a transaction or not)."""
    meta = dict(db.execute(
        "SELECT key, value FROM meta WHERE key IN ('uid', 'changes', 'vectors_at', 'last_rowid')"
    ).fetchall())  # fmt: skip
    return RowsVersion(
        meta.get("uid", ""),
        int(meta.get("changes", 0)),
        int(meta.get("vectors_at", 0)),
        int(meta.get("last_rowid", 0)),
    )


def bump(db: sqlite3.Connection) -> int:
    """Count one more change (inside the write's transaction); returns the new count."""
    changes = rows_version(db).changes + 1
    set_meta(db, {"changes": str(changes)})
    return changes


def _upgrade(db: sqlite3.Connection) -> None:
    """Give a new gallery, or one made before schema 2, its uid and its version keys."""
    if rows_version(db).uid:
        return
    with transaction(db):
        last = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM items").fetchone()[0]
        set_meta(db, {"uid": uuid.uuid4().hex, "schema": SCHEMA_VERSION,
                      "last_rowid": str(last)})  # fmt: skip


def _bind_model(db: sqlite3.Connection, root: Path, wanted: ModelBinding) -> None:
    """Record `wanted` in a new gallery; in an existing one, check that it is the model
    recorded (the same file under another name is recorded under the new name)."""
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    model_id, model_sha256, dim = wanted.model_id, wanted.model_sha256, wanted.dim
    if "model_sha256" in meta:
        if meta["model_sha256"] != model_sha256:
            raise GalleryModelMismatchError(
                f"gallery {root} holds vectors made by model {meta.get('model_id')} "
                f"(sha256 {meta['model_sha256'][:12]}...), not by {model_id} "
                f"(sha256 {model_sha256[:12]}...); vectors of different models cannot be "
                f"compared. Run `alexnet reindex` to re-embed its images with {model_id}, "
                "or use another gallery folder."
            )
        if int(meta["dim"]) != dim:
            raise ValueError(f"gallery {root} holds {meta['dim']}-d vectors, not {dim}-d")
        if meta.get("model_id") == model_id:
            return
    values = {"model_sha256": model_sha256, "model_id": model_id, "dim": str(dim)}
    if "schema" not in meta:
        values["schema"] = SCHEMA_VERSION
    with transaction(db):
        set_meta(db, values)
