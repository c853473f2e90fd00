"""A durable gallery of images and their FC7 vectors, searched by Euclidean distance.

    root/
      gallery.sqlite3     items (id, label, metadata, image file, sha256, vector) + meta (model)
      gallery.lock        held (flock) while a process has the gallery open
      images/<id><ext>    the uploaded bytes, as uploaded

SQLite is the source of truth; the FAISS index (FAISS id = SQLite rowid) is an in-memory copy
rebuilt at open: exact (`IDMap2,Flat`) while the gallery holds at most `exact_max` items,
above that a compressed one (`service.gallery.vector_index.CompressedIndex`: PCA + IVF + 8-bit codes,
candidates re-ranked by their exact distance from the vectors in SQLite). The switch happens
at open or when an add crosses the size; a delete takes effect in either.

An image file is written and fsynced before its row is committed, so an item that `add`
returned survives a crash; a file without a row is removed at the next open. Vectors of
different models never mix: a gallery is bound to the sha256 of the model that made its
vectors (`GalleryModelMismatchError`, `replace_vectors`).

Example:
    with Gallery.open("gallery", model_sha256=manifest.sha256, model_id=manifest.id) as g:
        [item_id] = g.add([NewItem(image_bytes=data, image_ext=".jpg", vector=fc7)])
        neighbors = g.search(fc7, k=10)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.store import now_iso
from service.gallery.vector_index import (
    MIN_TRAIN,
    PCA_SAMPLE,
    TRAIN_SAMPLE,
    CompressedIndex,
    ExactIndex,
)

log = logging.getLogger(__name__)

DB_FILE, LOCK_FILE, IMAGES_DIR = "gallery.sqlite3", "gallery.lock", "images"
DEFAULT_DIM = 4096
SCHEMA_VERSION = "1"
ID_RE = re.compile(r"[0-9a-f]{32}")
EXT_RE = re.compile(r"\.[a-z0-9]{1,10}")
IMAGE_NAME_RE = re.compile(r"[0-9a-f]{32}\.[a-z0-9]{1,10}")
TMP_PREFIX = ".tmp-"
READ_CHUNK = 1024  # rows per query when rebuilding the index (16 MB of 4096-d vectors)
SQL_VARS_CHUNK = 500  # old SQLite builds allow only 999 bound parameters per statement
DEFAULT_EXACT_MAX = 5_000  # above this many items the index is compressed (exact: ~5 ms per 1k)

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
"""


class GalleryModelMismatchError(RuntimeError):
    """The gallery's vectors were made by another model than the one being served."""


class GalleryLockedError(RuntimeError):
    """The gallery folder is already open (another process, or another `Gallery` object)."""


@dataclass
class NewItem:
    """An image to add, with the FC7 vector the served model computed for it."""

    image_bytes: bytes
    image_ext: str  # e.g. ".jpg"; becomes part of the file name, so it is validated
    vector: np.ndarray  # (dim,) float32
    label: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    """A stored item; `vector` is filled only when asked for."""

    id: str
    label: str | None
    metadata: dict[str, Any]
    created_at: str | None
    image_file: Path
    image_sha256: str | None
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Neighbor:
    """A search hit; `distance` is Euclidean (not squared)."""

    id: str
    distance: float
    label: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ModelBinding:
    """The model a gallery's vectors were made by."""

    model_id: str
    model_sha256: str
    dim: int


def is_valid_id(value: object) -> bool:
    """True for a gallery id: 32 lowercase hex characters (`uuid4().hex`)."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def stored_model(root: str | Path) -> ModelBinding | None:
    """The model recorded in the gallery at `root`, or None if there is no gallery there.

    Lets `alexnet reindex` open a gallery with its current model before replacing the vectors.
    """
    path = Path(root) / DB_FILE
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


def _fsync_dir(folder: Path) -> None:
    # A rename or a new file is durable only once its directory entry is.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a fsynced temporary file in the same folder."""
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _check_vector(vector: object, dim: int, what: str) -> np.ndarray:
    """`vector` as a contiguous (dim,) float32 array, or ValueError naming `what`."""
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: vector is not numeric ({e})") from None
    if array.shape != (dim,):
        raise ValueError(f"{what}: vector has shape {array.shape}, expected ({dim},)")
    # Checked after the cast: float64 values beyond float32's range become inf.
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: vector has NaN or infinite values")
    return np.ascontiguousarray(array)


def _check_model(model_sha256: str, model_id: str) -> None:
    if not isinstance(model_sha256, str) or not model_sha256:
        raise ValueError("model_sha256 must be a non-empty string")
    if not isinstance(model_id, str) or not model_id:
        raise ValueError("model_id must be a non-empty string")


class Gallery:
    """Images with FC7 vectors in SQLite + files, searched with a FAISS index in memory.

    Open with `Gallery.open`. Safe to share between threads: one lock serialises database
    access and index updates, and searches take it too so they never see a half-applied
    write (FAISS already spreads one search over the cores).
    """

    def __init__(
        self,
        root: Path,
        db: sqlite3.Connection,
        lock_fd: int,
        binding: ModelBinding,
        exact_max: int = DEFAULT_EXACT_MAX,
    ) -> None:
        """Internal: use `Gallery.open`."""
        self.root = root
        self.images_dir = root / IMAGES_DIR
        self.exact_max = exact_max
        self._db: sqlite3.Connection | None = db
        self._lock_fd = lock_fd
        self._binding = binding
        self._lock = threading.Lock()
        self._index: ExactIndex | CompressedIndex = ExactIndex(binding.dim)

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        model_sha256: str,
        model_id: str,
        dim: int = DEFAULT_DIM,
        exact_max: int = DEFAULT_EXACT_MAX,
    ) -> Gallery:
        """Open (or create) the gallery in `root`, bound to the model that makes its vectors.

        Args:
            root: gallery folder, created if missing.
            model_sha256: sha256 of the model serving the vectors (manifest `sha256`).
            model_id: its "name:version", for messages.
            dim: vector length (FC7: 4096).
            exact_max: up to this many items the index is exact; above, compressed with
                exact re-ranking (it needs at least 64 items to train).

        Raises:
            GalleryModelMismatchError: the gallery holds vectors of another model.
            GalleryLockedError: the gallery is already open elsewhere.
        """
        _check_model(model_sha256, model_id)
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if exact_max < 0:
            raise ValueError(f"exact_max must be >= 0, got {exact_max}")
        root = Path(root)
        (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        # The index is a copy of the table, valid only while this process is the only
        # writer; the lock also keeps orphan removal from deleting another writer's files.
        lock_fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise GalleryLockedError(
                f"gallery {root} is already open (by another process or another Gallery "
                "object in this one); close it first"
            ) from None
        db = None
        try:
            db = sqlite3.connect(root / DB_FILE, check_same_thread=False, isolation_level=None)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(f"SQLite refused WAL mode for {root / DB_FILE} (got {mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            for folder in (root / IMAGES_DIR, root):  # make a new gallery's entries durable
                _fsync_dir(folder)
            binding = cls._bind_model(db, root, model_sha256, model_id, dim)
            gallery = cls(root, db, lock_fd, binding, exact_max)
            gallery._load()
        except BaseException:
            if db is not None:
                db.close()
            os.close(lock_fd)  # releases the flock
            raise
        return gallery

    @staticmethod
    def _bind_model(
        db: sqlite3.Connection, root: Path, model_sha256: str, model_id: str, dim: int
    ) -> ModelBinding:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
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
                return ModelBinding(model_id, model_sha256, dim)
        # New gallery, or the same model file published under another name: record it.
        values = {"model_sha256": model_sha256, "model_id": model_id, "dim": str(dim)}
        if "schema" not in meta:
            values["schema"] = SCHEMA_VERSION
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return ModelBinding(model_id, model_sha256, dim)

    def _load(self) -> None:
        """Rebuild the index from the table and remove image files without a row."""
        db, dim = self._require_open(), self.dim
        count = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        if self._wants_compressed(count):
            self._index = self._train_compressed(count)
        known: set[str] = set()
        for rows in self._chunks("image_file, vector"):
            for rowid, image_file, blob in rows:
                if len(blob) != dim * 4:
                    raise RuntimeError(
                        f"{self.root / DB_FILE}: row {rowid} has a vector of {len(blob)} bytes, "
                        f"expected {dim * 4} ({dim} float32)"
                    )
                known.add(image_file)
            self._index.add(*self._stack(rows))

        removed = 0
        for path in self.images_dir.iterdir():
            name = path.name
            # Only names this module writes: never delete files someone else put there.
            ours = name.startswith(TMP_PREFIX) or IMAGE_NAME_RE.fullmatch(name) is not None
            if ours and name not in known and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("gallery %s: removed %d image file(s) without a row", self.root, removed)
        missing = sum(1 for name in known if not (self.images_dir / name).is_file())
        if missing:
            log.warning("gallery %s: %d item(s) have no image file", self.root, missing)
        log.info(
            "gallery %s: %d item(s), model %s, %s index",
            self.root, len(self), self.model_id, self.index_kind,
        )  # fmt: skip

    # ----------------------------------------------------------------- the index

    def _wants_compressed(self, count: int) -> bool:
        return count > self.exact_max and count >= MIN_TRAIN

    def _chunks(self, columns: str) -> Iterator[list[tuple]]:
        """Every row as (rowid, *columns), in rowid order, READ_CHUNK rows at a time.

        `columns` is a constant of this module (e.g. "image_file, vector"), never input.
        """
        db, last = self._require_open(), 0
        while rows := db.execute(
            f"SELECT rowid, {columns} FROM items WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (last, READ_CHUNK),
        ).fetchall():
            yield rows
            last = rows[-1][0]

    def _stack(self, rows: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, dim) float32, rowids (n,) int64) of rows whose first and last
        columns are the rowid and the vector blob."""
        vectors = np.frombuffer(b"".join(r[-1] for r in rows), dtype="<f4").reshape(-1, self.dim)
        return vectors, np.array([r[0] for r in rows], dtype=np.int64)

    def _fetch(self, rowids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full vectors of these rowids from SQLite (the caller holds the lock)."""
        db, rows = self._require_open(), []
        ids = [int(i) for i in rowids]
        for start in range(0, len(ids), SQL_VARS_CHUNK):
            chunk = ids[start : start + SQL_VARS_CHUNK]
            marks = ",".join("?" * len(chunk))  # only placeholders are formatted in
            rows += db.execute(f"SELECT rowid, vector FROM items WHERE rowid IN ({marks})", chunk)
        vectors, found = self._stack(rows)
        return found, vectors

    def _train_compressed(self, count: int) -> CompressedIndex:
        """A compressed index trained on a random sample of the stored vectors (not filled)."""
        db = self._require_open()
        rowids = np.array([r[0] for r in db.execute("SELECT rowid FROM items")], dtype=np.int64)
        rng = np.random.default_rng(0)
        rowids = rng.permutation(rowids)[:TRAIN_SAMPLE]
        # The first PCA_SAMPLE vectors train the PCA too; the others only the lists, read a
        # chunk at a time and kept in PCA dimensions.
        first, rest = np.sort(rowids[:PCA_SAMPLE]), np.sort(rowids[PCA_SAMPLE:])
        chunks = (self._fetch(rest[i : i + READ_CHUNK])[1] for i in range(0, len(rest), READ_CHUNK))
        log.info("gallery %s: training a compressed index on %d vectors", self.root, len(rowids))
        return CompressedIndex(self.dim, self._fetch, self._fetch(first)[1], expected=count,
                               more=chunks)  # fmt: skip

    def _compress_now(self) -> None:
        """Switch the exact index to a compressed one holding every row (the lock is held)."""
        count = self._index.ntotal
        try:
            index = self._train_compressed(count)
            for rows in self._chunks("vector"):
                index.add(*self._stack(rows))
        except Exception:  # noqa: BLE001 - the rows are committed; the exact index still serves
            log.exception("gallery %s: could not build the compressed index", self.root)
            return
        self._index = index
        log.info("gallery %s: %d items, switched to the compressed index", self.root, count)

    @property
    def index_kind(self) -> str:
        """ "exact" or "compressed"."""
        return self._index.kind

    def close(self) -> None:
        """Close the database and release the folder; further calls raise RuntimeError."""
        with self._lock:
            if self._db is None:
                return
            self._db.close()
            self._db = None
            os.close(self._lock_fd)
            self._index = ExactIndex(self.dim)

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_open(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"gallery {self.root} is closed")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (the caller holds the lock)."""
        db = self._require_open()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT can leave it open
                db.execute("ROLLBACK")
            raise

    # ----------------------------------------------------------------- properties

    @property
    def model_id(self) -> str:
        """'name:version' of the model whose vectors the gallery holds."""
        return self._binding.model_id

    @property
    def model_sha256(self) -> str:
        """sha256 of that model's ONNX file."""
        return self._binding.model_sha256

    @property
    def dim(self) -> int:
        """Vector length."""
        return self._binding.dim

    def __len__(self) -> int:
        return self._index.ntotal

    # ----------------------------------------------------------------- writes

    def add(self, items: list[NewItem]) -> list[str]:
        """Store images with their vectors, all or none; durable once this returns.

        Args:
            items: the images, their extensions (".jpg"), vectors, labels and metadata.

        Returns:
            The new ids, in the order of `items`.

        Raises:
            ValueError: an item is invalid (nothing is written then).
        """
        rows, vectors, files = [], [], []
        for i, item in enumerate(items):
            what = f"item {i}"
            if not isinstance(item.image_bytes, (bytes, bytearray, memoryview)):
                raise ValueError(f"{what}: image_bytes must be bytes")
            data = bytes(item.image_bytes)
            if not data:
                raise ValueError(f"{what}: image_bytes is empty")
            ext = item.image_ext.lower() if isinstance(item.image_ext, str) else ""
            if not EXT_RE.fullmatch(ext):
                raise ValueError(
                    f"{what}: invalid image_ext {item.image_ext!r}, expected like '.jpg' "
                    "(a dot and 1-10 letters or digits)"
                )
            vector = _check_vector(item.vector, self.dim, what)
            if item.label is not None and not isinstance(item.label, str):
                raise ValueError(f"{what}: label must be a string or None")
            if not isinstance(item.metadata, dict):
                raise ValueError(f"{what}: metadata must be a dict (a JSON object)")
            try:
                metadata = json.dumps(item.metadata, allow_nan=False, ensure_ascii=False)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{what}: metadata is not JSON-serialisable ({e})") from None
            item_id = uuid.uuid4().hex
            image_file = f"{item_id}{ext}"
            rows.append(
                (item_id, item.label, metadata, now_iso(), image_file,
                 hashlib.sha256(data).hexdigest(), vector.astype("<f4").tobytes())
            )  # fmt: skip
            vectors.append(vector)
            files.append((self.images_dir / image_file, data))
        if not rows:
            return []
        self._require_open()

        # Files first, outside the lock (fsync is slow): a crash before the commit leaves
        # only orphans, which the next open removes.
        written: list[Path] = []
        committed = False
        try:
            for path, data in files:
                _write_atomic(path, data)
                written.append(path)
            with self._lock:
                with self._transaction() as db:
                    rowids = [
                        db.execute(
                            "INSERT INTO items (id, label, metadata, created_at, image_file, "
                            "image_sha256, vector) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            row,
                        ).lastrowid
                        for row in rows
                    ]
                committed = True
                # Under the same lock as the commit, so a remove cannot slip in between.
                self._index.add(np.stack(vectors), np.array(rowids, dtype=np.int64))
                if self._index.kind == "exact" and self._wants_compressed(self._index.ntotal):
                    self._compress_now()
        except BaseException:
            if not committed:  # once committed, the files belong to rows
                for path in written:
                    path.unlink(missing_ok=True)
            raise
        return [row[0] for row in rows]

    def remove(self, id: str) -> bool:
        """Delete an item (row, image file, index entry); False if there is no such id."""
        if not is_valid_id(id):
            return False
        with self._lock:
            with self._transaction() as db:
                row = db.execute(
                    "SELECT rowid, image_file FROM items WHERE id = ?", (id,)
                ).fetchone()
                if row is not None:
                    db.execute("DELETE FROM items WHERE rowid = ?", (row[0],))
            if row is None:
                return False
            rowid, image_file = row
            # After the commit: a crash in between leaves an orphan file, removed at open.
            try:
                (self.images_dir / image_file).unlink(missing_ok=True)
            except OSError as e:  # the item is gone all the same; the file is an orphan now
                log.warning("gallery %s: could not remove %s: %s", self.root, image_file, e)
            self._index.remove(np.array([rowid], dtype=np.int64))
        return True

    def replace_vectors(
        self, vectors: dict[str, np.ndarray], *, model_sha256: str, model_id: str
    ) -> None:
        """Swap every vector for one made by another model (`alexnet reindex`).

        Args:
            vectors: id -> new (dim,) vector, for exactly the gallery's items.
            model_sha256: sha256 of the model that made them.
            model_id: its "name:version".

        Raises:
            ValueError: a vector is invalid, or the ids are not exactly the gallery's.
        """
        _check_model(model_sha256, model_id)
        checked = {k: _check_vector(v, self.dim, f"vector for {k!r}") for k, v in vectors.items()}
        with self._lock:
            db = self._require_open()
            rowid_of = dict(db.execute("SELECT id, rowid FROM items").fetchall())
            # A partial reindex would leave vectors of two models side by side.
            missing, unknown = rowid_of.keys() - checked.keys(), checked.keys() - rowid_of.keys()
            if missing or unknown:
                raise ValueError(
                    f"replace_vectors needs a vector for each of the {len(rowid_of)} items and "
                    f"no others: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
                    f"{len(unknown)} unknown (e.g. {sorted(unknown)[:3]})"
                )
            rowids = np.array([rowid_of[k] for k in checked], dtype=np.int64)
            # Built before the commit, so running out of memory changes nothing.
            index: ExactIndex | CompressedIndex = ExactIndex(self.dim)
            if checked:
                stacked = np.stack(list(checked.values()))
                if self._wants_compressed(len(stacked)):
                    pick = np.random.default_rng(0).permutation(len(stacked))[:TRAIN_SAMPLE]
                    index = CompressedIndex(
                        self.dim,
                        self._fetch,
                        stacked[pick[:PCA_SAMPLE]],
                        expected=len(stacked),
                        more=[stacked[pick[PCA_SAMPLE:]]],
                    )
                index.add(stacked, rowids)
            with self._transaction() as tx:
                tx.executemany(
                    "UPDATE items SET vector = ? WHERE rowid = ?",
                    ((v.astype("<f4").tobytes(), rowid_of[k]) for k, v in checked.items()),
                )
                tx.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("model_sha256", model_sha256), ("model_id", model_id)],
                )
            self._index = index
            self._binding = ModelBinding(model_id, model_sha256, self.dim)

    # ----------------------------------------------------------------- reads

    def _item(self, row: tuple, vector: np.ndarray | None = None) -> Item:
        item_id, label, metadata, created_at, image_file, image_sha256 = row[:6]
        return Item(
            id=item_id, label=label, metadata=json.loads(metadata), created_at=created_at,
            image_file=self.images_dir / image_file, image_sha256=image_sha256, vector=vector,
        )  # fmt: skip

    def get(self, id: str, with_vector: bool = False) -> Item | None:
        """The item with this id (its vector too if `with_vector`), or None."""
        if not is_valid_id(id):
            return None
        with self._lock:
            row = (
                self._require_open()
                .execute(
                    "SELECT id, label, metadata, created_at, image_file, image_sha256, vector "
                    "FROM items WHERE id = ?",
                    (id,),
                )
                .fetchone()
            )
        if row is None:
            return None
        vector = np.frombuffer(row[6], dtype="<f4").astype(np.float32) if with_vector else None
        return self._item(row, vector)

    def image_path(self, id: str) -> Path | None:
        """The stored image file of this id, or None (unknown id or missing file)."""
        if not is_valid_id(id):
            return None
        with self._lock:
            row = (
                self._require_open()
                .execute("SELECT image_file FROM items WHERE id = ?", (id,))
                .fetchone()
            )
        if row is None:
            return None
        path = self.images_dir / row[0]
        return path if path.is_file() else None

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[Item], int]:
        """A page of items in insertion order, and the total number of items."""
        if offset < 0 or limit < 0:
            raise ValueError(f"offset and limit must be >= 0, got {offset} and {limit}")
        with self._lock:
            db = self._require_open()
            total = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            rows = db.execute(
                "SELECT id, label, metadata, created_at, image_file, image_sha256 FROM items "
                "ORDER BY rowid LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [self._item(row) for row in rows], total

    def iter_images(self) -> Iterator[tuple[str, Path]]:
        """(id, image path) of every item in insertion order, read a chunk at a time."""
        last = 0
        while True:
            with self._lock:
                rows = (
                    self._require_open()
                    .execute(
                        "SELECT rowid, id, image_file FROM items WHERE rowid > ? "
                        "ORDER BY rowid LIMIT ?",
                        (last, READ_CHUNK),
                    )
                    .fetchall()
                )
            if not rows:
                return
            for _, item_id, image_file in rows:
                yield item_id, self.images_dir / image_file
            last = rows[-1][0]

    def search(self, vector: np.ndarray, k: int = 10) -> list[Neighbor]:
        """The `k` items nearest to `vector` by Euclidean distance, nearest first.

        Args:
            vector: (dim,) query vector.
            k: how many neighbours (all items if the gallery has fewer).
        """
        query = _check_vector(vector, self.dim, "query")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with self._lock:
            return self._search_locked(query, k, skip=None)

    def search_by_id(
        self, id: str, k: int = 10, exclude_self: bool = False
    ) -> list[Neighbor] | None:
        """The `k` items nearest to an item's vector; None if there is no such id.

        Args:
            id: the item whose vector is the query.
            k: how many neighbours.
            exclude_self: leave the item itself out of the answer.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not is_valid_id(id):
            return None
        with self._lock:
            row = (
                self._require_open()
                .execute("SELECT rowid, vector FROM items WHERE id = ?", (id,))
                .fetchone()
            )
            if row is None:
                return None
            query = np.frombuffer(row[1], dtype="<f4").astype(np.float32)
            return self._search_locked(query, k, skip=row[0] if exclude_self else None)

    def _search_locked(self, query: np.ndarray, k: int, skip: int | None) -> list[Neighbor]:
        db = self._require_open()
        n = min(k + (skip is not None), self._index.ntotal)
        if n == 0:
            return []
        # Skip by rowid, not by rank: an exact duplicate may rank before the item itself.
        hits = [(i, d) for i, d in self._index.search(query, n) if i != skip][:k]
        rows: dict[int, tuple] = {}
        for start in range(0, len(hits), SQL_VARS_CHUNK):
            chunk = [rowid for rowid, _ in hits[start : start + SQL_VARS_CHUNK]]
            marks = ",".join("?" * len(chunk))  # only placeholders are formatted in
            for rowid, *rest in db.execute(
                f"SELECT rowid, id, label, metadata FROM items WHERE rowid IN ({marks})", chunk
            ):
                rows[rowid] = tuple(rest)
        return [
            Neighbor(
                id=rows[rowid][0],
                # FAISS returns squared L2, which rounding can push slightly below zero.
                distance=math.sqrt(max(d, 0.0)),
                label=rows[rowid][1],
                metadata=json.loads(rows[rowid][2]),
            )
            for rowid, d in hits
            if rowid in rows
        ]
