"""The gallery folder's exclusive lock: one open `Gallery` per folder, across processes.

The in-memory index is a copy of the SQLite table, valid only while its process is the only
writer; the lock also keeps the orphan sweep at open from deleting another writer's files.
An flock is released by the kernel when its process dies, so a crash never leaves it held.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from core.constants import GALLERY_LOCK_FILE
from service.gallery.items import GalleryLockedError


class FolderLock:
    """An exclusive, non-blocking flock on `root/gallery.lock`, held until `release`.

    Raises:
        GalleryLockedError: another process or `Gallery` object holds it.
    """

    def __init__(self, root: Path) -> None:
        self._fd: int | None = os.open(root / GALLERY_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise GalleryLockedError(
                f"gallery {root} is already open (by another process or another Gallery "
                "object in this one); close it first"
            ) from None

    def release(self) -> None:
        """Close the file, which releases the flock; idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
