"""Whether the persisted index serves at open, and how it is brought up to date.

The file (`index_file`) is used only if it is whole, was written for this gallery (its
uid), indexes the vectors the rows hold now (same model and dim, no `replace_vectors`
after it: `vectors_at`), is not ahead of the rows (a database put back from a backup), and
its lists still fit: the rows are at most GROWTH times what the lists were sized for (the
rebuild at open used to resize them every time), and the changes since it touch at most
MAX_CATCH_UP of the rows. It is then brought up to date - the rowids deleted after its
change count removed, the rows above its last rowid added from SQLite (rowids are never
reused) - and must then hold exactly as many vectors as there are rows.

Anything else raises `StaleIndexError` with the reason, and the caller rebuilds the index
from the rows: a stale or damaged file costs time, never a wrong or missing item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.gallery.index_file import IndexFileError, IndexStamp, read_index_file
from service.gallery.items import ModelBinding
from service.gallery.sqlite_db import RowsVersion
from service.gallery.sqlite_rows import SqliteRows
from service.gallery.vector_index import CompressedIndex

GROWTH = 4  # more rows than this times what the lists were sized for: retrain (2x the lists)
MAX_CATCH_UP = 0.5  # more rows deleted + added since the file than this share: rebuild


class StaleIndexError(Exception):
    """The index file cannot serve these rows (the message says why)."""


@dataclass
class Restored:
    """An index file brought up to date: the index, its stamp, what the catch-up did."""

    index: CompressedIndex
    stamp: IndexStamp
    removed: int
    added: int


def too_few_lists(count: int, expected: int) -> bool:
    """Whether lists sized for `expected` vectors are too few for `count`."""
    return count > GROWTH * max(expected, 1)


def check(stamp: IndexStamp, version: RowsVersion, binding: ModelBinding, count: int) -> None:
    """StaleIndexError unless a file with `stamp` can be brought up to date with the rows."""
    if stamp.uid != version.uid:
        raise StaleIndexError(f"it was written for another gallery ({stamp.uid})")
    if (stamp.model_sha256, stamp.dim) != (binding.model_sha256, binding.dim):
        raise StaleIndexError(f"it indexes the vectors of another model ({stamp.model_sha256[:12]}"
                              f"..., {stamp.dim}-d)")  # fmt: skip
    if stamp.changes > version.changes or stamp.last_rowid > version.last_rowid:
        raise StaleIndexError(
            f"it is ahead of the rows (change {stamp.changes}, rowid {stamp.last_rowid}; the "
            f"rows are at {version.changes}, {version.last_rowid}): were they put back from a "
            "backup?"
        )
    if stamp.changes < version.vectors_at:
        raise StaleIndexError(f"the vectors were replaced after it (change {version.vectors_at}"
                              f" > {stamp.changes})")  # fmt: skip
    if too_few_lists(count, stamp.expected):
        raise StaleIndexError(f"its lists were sized for {stamp.expected} vectors and the "
                              f"rows are {count} now: retraining")  # fmt: skip


def restore(path: Path, rows: SqliteRows, count: int) -> Restored:
    """The index of the file at `path`, brought up to date with `rows` (`count` of them).

    Raises:
        StaleIndexError: the file is missing, damaged or does not fit the rows.
    """
    try:
        stamp, data = read_index_file(path)
    except IndexFileError as e:
        raise StaleIndexError(str(e)) from e
    check(stamp, rows.version(), rows.binding, count)
    try:
        index = CompressedIndex.from_bytes(rows.dim, rows.vectors, data, expected=stamp.expected)
    except (ValueError, RuntimeError) as e:  # RuntimeError: FAISS's
        raise StaleIndexError(f"FAISS cannot read it: {e}") from e
    del data
    if index.ntotal != stamp.ntotal:
        raise StaleIndexError(f"it holds {index.ntotal} vectors, its stamp says {stamp.ntotal}")
    deleted = rows.deleted_since(stamp.changes)
    added = rows.count_after(stamp.last_rowid)
    if len(deleted) + added > MAX_CATCH_UP * count:
        raise StaleIndexError(f"{len(deleted)} rows were deleted and {added} added since it "
                              f"was written, of {count}: rebuilding")  # fmt: skip
    if len(deleted):
        index.remove(deleted)
    removed = stamp.ntotal - index.ntotal
    for chunk in rows.chunks("vector", after=stamp.last_rowid):
        index.add(*rows.stack(chunk))
    if index.ntotal != count:
        raise StaleIndexError(f"brought up to date it holds {index.ntotal} vectors, and there "
                              f"are {count} rows")  # fmt: skip
    return Restored(index, stamp, removed, added)
