"""The persisted compressed index: one file, `gallery.faiss`, replaced whole or not at all.

    line 1   b"alexnet-gallery-index 1\n"
    line 2   the stamp, one line of JSON: what the index reflects (`IndexStamp`), and the
             length and CRC-32 of the bytes that follow
    rest     the FAISS index (`CompressedIndex.to_bytes`: PCA transform, lists, codes, ids)

Written with the project's one durable write (`core.durable.write_atomic`: temporary file,
fsync, rename, fsync of the folder), so a crash leaves the old file or the new one; the
stamp and the index are in one file, so they cannot disagree. `read_index_file` checks the
length and the checksum before FAISS parses a byte: a truncated or damaged file is an
`IndexFileError`, never a wrong index. Whether a sound file still fits the rows is for
`index_restore` to say.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np

from core.durable import TMP_PREFIX, fsync_path, write_atomic

INDEX_FILE = "gallery.faiss"
MAGIC = b"alexnet-gallery-index 1\n"
MAX_STAMP_BYTES = 4096


class IndexFileError(Exception):
    """The index file is missing, truncated, damaged or not one of ours."""


@dataclass(frozen=True)
class IndexStamp:
    """What a persisted index reflects.

    Attributes:
        uid: the gallery's uid (`sqlite_db.RowsVersion`).
        model_sha256: the model whose vectors it indexes; dim: their length.
        changes: the rows' change count it reflects; last_rowid: their last rowid then.
        ntotal: the vectors it holds.
        expected: the vectors its lists were sized for (`CompressedIndex.expected`).
    """

    uid: str
    model_sha256: str
    dim: int
    changes: int
    last_rowid: int
    ntotal: int
    expected: int


def write_index_file(path: Path, stamp: IndexStamp, data: np.ndarray) -> None:
    """Replace `path` with `stamp` and the index bytes `data` (uint8), durably."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    header = {**asdict(stamp), "bytes": int(data.nbytes), "crc32": zlib.crc32(data)}

    def write(f: IO[bytes]) -> None:
        f.write(MAGIC + json.dumps(header).encode() + b"\n")
        f.write(memoryview(data))

    write_atomic(path, write)


def read_index_file(path: Path) -> tuple[IndexStamp, np.ndarray]:
    """(the stamp, the index bytes) of a whole, undamaged file.

    Raises:
        IndexFileError: the file is missing, not ours, truncated or damaged (says which).
    """
    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise IndexFileError(f"{path} is not a gallery index file (or of another version)")
            line = f.readline(MAX_STAMP_BYTES)
            data = np.fromfile(f, dtype=np.uint8)
    except FileNotFoundError:
        raise IndexFileError(f"there is no {path.name}") from None
    except OSError as e:
        raise IndexFileError(f"cannot read {path}: {e}") from e
    try:
        header = json.loads(line)
        size, crc = header.pop("bytes"), header.pop("crc32")
        stamp = IndexStamp(**header)
        if not all(isinstance(v, str if k in ("uid", "model_sha256") else int)
                   for k, v in asdict(stamp).items()):  # fmt: skip
            raise ValueError(f"a field of the wrong type in {header}")
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise IndexFileError(f"{path}: unreadable stamp ({e})") from e
    if data.nbytes != size:
        raise IndexFileError(f"{path} is truncated: {data.nbytes} of {size} index bytes")
    if zlib.crc32(data) != crc:
        raise IndexFileError(f"{path} is damaged: its checksum does not match")
    return stamp, data


def remove_index_file(root: Path) -> bool:
    """Remove the index file, durably; True if there was one."""
    path = root / INDEX_FILE
    existed = path.exists()
    path.unlink(missing_ok=True)
    if existed:
        fsync_path(root)
    return existed


def remove_leftovers(root: Path) -> int:
    """Remove the temporary files of index writes cut off by a crash; how many."""
    leftovers = list(root.glob(f"{TMP_PREFIX}*-{INDEX_FILE}"))
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return len(leftovers)
