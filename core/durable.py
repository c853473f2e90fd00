"""The one durable write of the project: temporary file, fsync, rename, fsync of the folder.

A crash at any moment leaves either the old file or the new one, never half of one, and
once a call returns the new file survives a power cut (its data and its directory entry are
both on disk). Every writer of the project uses it: checkpoints, manifests, metrics, the
gallery's image files, generated image sets.

    write_atomic(path, b"...")                         # bytes
    write_atomic(path, lambda f: torch.save(obj, f))   # or a function that writes to a file
    write_json_atomic(path, {"a": 1})
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TMP_PREFIX = ".tmp-"  # temporary files start with this; a sweep may remove leftovers


def fsync_path(path: str | Path) -> None:
    """Flush a file (one someone else wrote: onnx.save, a quantizer) or a folder's entries
    (a rename, a new file) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path_for(path: Path) -> Path:
    """A fresh temporary name beside `path`, starting with TMP_PREFIX."""
    return path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")


def write_atomic(
    path: str | Path, data: bytes | Callable[[IO[bytes]], Any], *, mode: int = 0o644
) -> Path:
    """Replace `path` with `data` (bytes, or a function that writes to a binary file) durably.

    Args:
        path: the file to write; its folder is created if missing.
        data: the bytes, or `write(f)` called with the open temporary file.
        mode: permission bits of the new file.

    Returns:
        `path`, as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        with open(tmp, "xb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 2) -> Path:
    """`data` as JSON (and a final newline), written with `write_atomic`."""
    return write_atomic(path, (json.dumps(data, indent=indent) + "\n").encode())


def write_lines_atomic(path: str | Path, rows: list[Any]) -> Path:
    """One JSON object per line (JSON Lines), written with `write_atomic`."""
    return write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
