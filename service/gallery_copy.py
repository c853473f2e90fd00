"""Copy a gallery to another location, either backend to either (`alexnet gallery copy`).

    result = copy_gallery("gallery", "postgresql://alexnet@db/alexnet")
    if result.verification.problems: ...

Moves a one-machine gallery (a folder: SQLite + FAISS) up to PostgreSQL + pgvector, and back.
The source is only read. The destination is opened with the source's model binding (created
if missing; `GalleryModelMismatchError` if it holds another model's vectors) and receives the
source's items in insertion order, ids, labels, metadata, creation times, vectors and image
bytes kept, a chunk at a time (`import_records`: each chunk all or none, durable once
written). Ids the destination already holds are skipped, so a copy that was interrupted and
is run again resumes where it stopped and never duplicates an item.

At the end both sides are read again into a checksum (`checksum`) and compared with the
counts: what was read from the source must be in the destination, bit for bit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.gallery import (
    GalleryBackend,
    ItemRecord,
    is_database_url,
    open_gallery,
    shown,
    stored_model,
)

log = logging.getLogger(__name__)

CHUNK = 256  # records per import_records call (4 MB of 4096-d vectors, plus their images)


# ----------------------------------------------------------------- the checksum


def record_digest(record: ItemRecord) -> bytes:
    """sha256 of what the copy must keep of an item, as the checksum takes it:

        id (32 hex digits) | label (a marker byte, then UTF-8) | image sha256 (32 bytes)
        | the vector as little-endian float32 bytes

    Metadata and created_at are left out: a backend may give them back written differently
    (JSON key order, a timestamp's format) while they mean the same.
    """
    h = hashlib.sha256(record.id.encode("ascii"))
    h.update(b"\x00" if record.label is None else b"\x01" + record.label.encode("utf-8"))
    h.update(hashlib.sha256(record.image_bytes).digest())
    h.update(np.ascontiguousarray(record.vector, dtype="<f4").tobytes())
    return h.digest()


def combined(digests: dict[str, bytes], ids: Iterable[str] | None = None) -> str:
    """sha256 hex over the sorted ids, each followed by its record digest (all of `digests`,
    or only `ids`)."""
    h = hashlib.sha256()
    for item_id in sorted(digests if ids is None else ids):
        h.update(item_id.encode("ascii"))
        h.update(digests[item_id])
    return h.hexdigest()


def digests_of(gallery: GalleryBackend) -> dict[str, bytes]:
    """id -> `record_digest` of every item of an open gallery."""
    return {record.id: record_digest(record) for record in gallery.iter_records()}


def checksum(gallery: GalleryBackend) -> tuple[int, str]:
    """(items, checksum) of an open gallery: the checksum `copy_gallery` verifies with."""
    digests = digests_of(gallery)
    return len(digests), combined(digests)


# ----------------------------------------------------------------- the result


@dataclass
class Verification:
    """Both sides after a complete copy.

    `src_sha256` is over every item read from the source; `dst_sha256` over the destination's
    items with those ids (all of its items when it holds no others), so the two are equal
    when every source item arrived unchanged.
    """

    src_count: int
    src_sha256: str
    dst_count: int  # every item the destination holds
    dst_sha256: str
    missing: list[str] = field(default_factory=list)  # source ids the destination lacks
    extra: int = 0  # destination items whose id the source does not have
    allow_extra: bool = False

    @property
    def problems(self) -> list[str]:
        """Why the copy is not verified; empty when it is."""
        found = []
        if self.missing:
            found.append(
                f"{len(self.missing)} source item(s) missing from the destination, "
                f"e.g. {self.missing[0]}"
            )
        if self.extra and not self.allow_extra:
            found.append(
                f"the destination holds {self.extra} item(s) the source does not have "
                "(it was not empty, or it is written meanwhile); allow them with --allow-extra"
            )
        expected = self.src_count + self.extra
        if self.dst_count != expected:
            found.append(f"the destination holds {self.dst_count} items, expected {expected}")
        if self.src_sha256 != self.dst_sha256:
            found.append("the checksums differ")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class CopyResult:
    """What `copy_gallery` did."""

    src: str  # the locations as shown (a URL without its password)
    dst: str
    model_id: str
    read: int  # source items read
    copied: int  # of them, written to the destination now
    skipped: int  # of them, already there (a resumed copy)
    complete: bool  # False when stopped early by `max_chunks`
    verification: Verification | None = None  # None when not complete


# ----------------------------------------------------------------- the copy


def chunks(records: Iterable[ItemRecord], size: int) -> Iterator[list[ItemRecord]]:
    """`records` in lists of `size` (the last may be shorter)."""
    chunk: list[ItemRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def same_location(a: str | Path, b: str | Path) -> bool:
    """True when `a` and `b` name the same folder, or are the same URL."""
    if is_database_url(a) or is_database_url(b):
        return str(a) == str(b)
    return Path(a).resolve() == Path(b).resolve()


def copy_gallery(
    src: str | Path,
    dst: str | Path,
    *,
    chunk_size: int = CHUNK,
    allow_extra: bool = False,
    max_chunks: int | None = None,
    progress: bool = True,
) -> CopyResult:
    """Copy every item of the gallery at `src` into the one at `dst`, then verify.

    Args:
        src: a gallery folder or postgresql:// URL; only read.
        dst: a folder or URL; created if missing, bound to the source's model.
        chunk_size: records per write (each chunk is all or none).
        allow_extra: the destination may hold items the source does not have.
        max_chunks: stop after reading this many chunks, unverified (a copy cut short, as
            the tests make one; run again to resume).
        progress: show a progress bar.

    Returns:
        What was copied and, when complete, the verification (check `.problems`).

    Raises:
        FileNotFoundError: there is no gallery at `src`.
        ValueError: `src` and `dst` are the same gallery, or `chunk_size` < 1.
        GalleryModelMismatchError: `dst` holds another model's vectors (it is unchanged).
        GalleryLockedError: a folder gallery is open in another process (a running service).
        GalleryUnavailableError: a database cannot be reached.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if same_location(src, dst):
        raise ValueError(f"source and destination are the same gallery: {shown(src)}")
    binding = stored_model(src)
    if binding is None:
        raise FileNotFoundError(f"no gallery at {shown(src)}")
    model = {"model_sha256": binding.model_sha256, "model_id": binding.model_id,
             "dim": binding.dim}  # fmt: skip
    with open_gallery(src, **model) as source, open_gallery(dst, **model) as target:
        result = CopyResult(shown(src), shown(dst), binding.model_id, 0, 0, 0, complete=True)
        digests: dict[str, bytes] = {}
        bar = tqdm(total=len(source), desc=f"copying to {shown(dst)}", unit="item",
                   disable=not progress)  # fmt: skip
        with bar:
            for n, chunk in enumerate(chunks(source.iter_records(), chunk_size)):
                if max_chunks is not None and n >= max_chunks:
                    result.complete = False
                    break
                present = target.known_ids([r.id for r in chunk])
                new = [r for r in chunk if r.id not in present]
                if new:
                    target.import_records(new)
                for record in chunk:
                    digests[record.id] = record_digest(record)
                result.read += len(chunk)
                result.copied += len(new)
                result.skipped += len(chunk) - len(new)
                bar.update(len(chunk))
                bar.set_postfix(copied=result.copied, skipped=result.skipped, refresh=False)
        log.info(
            "copied %d item(s) of %s to %s, %d already there%s",
            result.copied, result.src, result.dst, result.skipped,
            "" if result.complete else f" (stopped after {max_chunks} chunk(s))",
        )  # fmt: skip
        if result.complete:
            result.verification = verify(digests, target, allow_extra=allow_extra)
    return result


def verify(
    src_digests: dict[str, bytes], target: GalleryBackend, *, allow_extra: bool = False
) -> Verification:
    """Compare what was read from the source (id -> `record_digest`) with the destination."""
    dst_digests = digests_of(target)
    missing = sorted(src_digests.keys() - dst_digests.keys())
    extra = len(dst_digests.keys() - src_digests.keys())
    shared = src_digests.keys() & dst_digests.keys()
    return Verification(
        src_count=len(src_digests), src_sha256=combined(src_digests),
        dst_count=len(dst_digests),
        dst_sha256=combined(dst_digests, shared if extra else None),
        missing=missing, extra=extra, allow_extra=allow_extra,
    )  # fmt: skip
