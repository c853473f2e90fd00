"""The gallery's image files: `images/<id><ext>`, the uploaded bytes as uploaded.

Each file is written with the project's one durable write (`core.durable.write_atomic`:
temporary file, fsync, rename, fsync of the folder) before its row is committed, and
removed after its row is deleted; a crash in between leaves a file without a row, which
`sweep` removes at the next open.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from core.durable import TMP_PREFIX, write_atomic

log = logging.getLogger(__name__)

IMAGE_NAME_RE = re.compile(r"[0-9a-f]{32}\.[a-z0-9]{1,10}")  # the names `file_name` makes


def file_name(item_id: str, ext: str) -> str:
    """The file of an item: its id (32 hex characters) and its extension (".jpg")."""
    return f"{item_id}{ext}"


class ImageFiles:
    """The image files in one folder, by name (the `image_file` column of the rows)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / name

    def existing(self, name: str) -> Path | None:
        """The file's path, or None if it is missing."""
        path = self.folder / name
        return path if path.is_file() else None

    def write(self, name: str, data: bytes) -> Path:
        """Write the file durably (its data and its directory entry)."""
        return write_atomic(self.folder / name, data)

    def remove(self, name: str) -> None:
        """Delete the file if it exists; a failure is logged (the file is an orphan then)."""
        try:
            (self.folder / name).unlink(missing_ok=True)
        except OSError as e:
            log.warning("gallery %s: could not remove %s: %s", self.folder.parent, name, e)

    def sweep(self, known: Iterable[str]) -> None:
        """Remove the files of ours not in `known` (orphans, temporary files); count the
        known ones that are missing. Both are logged."""
        known = set(known)
        removed = 0
        for path in self.folder.iterdir():
            name = path.name
            # Only names this package writes: never delete files someone else put there.
            ours = name.startswith(TMP_PREFIX) or IMAGE_NAME_RE.fullmatch(name) is not None
            if ours and name not in known and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        root = self.folder.parent
        if removed:
            log.warning("gallery %s: removed %d image file(s) without a row", root, removed)
        missing = sum(1 for name in known if not (self.folder / name).is_file())
        if missing:
            log.warning("gallery %s: %d item(s) have no image file", root, missing)
