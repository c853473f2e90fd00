"""`alexnet gallery ACTION`: work on a whole gallery, whichever backend holds it.

    alexnet gallery copy gallery postgresql://alexnet@db:5432/alexnet    # up to PostgreSQL
    alexnet gallery copy postgresql://alexnet@db:5432/alexnet gallery    # and back

One subparser per action (`copy` now); the work is done by `service.gallery_copy`.
"""

from __future__ import annotations

import argparse

from service import gallery_copy

COPY_DESCRIPTION = """\
Copy every item of the gallery SRC into the gallery DST: ids, labels, metadata, creation
times, vectors and image bytes, in insertion order. Either may be a folder (the embedded
SQLite + FAISS gallery of one machine) or a postgresql:// URL (PostgreSQL + pgvector, shared
by replicas), so it moves a gallery up from one machine to PostgreSQL, and back.

SRC is only read. DST is bound to SRC's model: it is created if missing, and refused (left
unchanged) if it holds another model's vectors.

Resumable: items are written in chunks, each all or none and durable once written, and ids
DST already holds are skipped, so a copy that was interrupted (Ctrl-C, a crash, a lost
connection) resumes where it stopped when run again, never duplicating an item.

Verified at the end: DST is read back and must hold every item read from SRC, the counts
must agree, and a checksum computed on both sides must be equal (sha256 over the sorted ids,
each with its label, the sha256 of its image bytes and its vector as little-endian float32;
metadata and creation times are copied as they are but not part of the checksum). Both
counts and checksums are printed. Items in DST that SRC does not have (DST was not empty)
fail the verification (SRC's items are copied all the same) unless --allow-extra is given.
The exit code is 1 on any mismatch, with the reason.

A folder gallery is locked while a process has it open: stop the service that serves a
folder SRC or DST first. A database gallery may go on being served meanwhile, but then its
counts may move while the copy runs (items added or removed by the service), and the
verification reports the difference (items added to a served DST count as extra)."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet gallery",
        description="Work on a whole gallery, a folder or a postgresql:// URL alike.",
        epilog="Run `alexnet gallery ACTION --help` for the options of each action.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    copy = actions.add_parser(
        "copy",
        prog="alexnet gallery copy",
        help="copy a gallery to another folder or database, resumable and verified",
        description=COPY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  alexnet gallery copy gallery postgresql://alexnet:PASSWORD@db:5432/alexnet\n"
        "  alexnet gallery copy postgresql://alexnet:PASSWORD@db:5432/alexnet gallery-copy",
    )
    copy.add_argument("src", metavar="SRC", help="the gallery to copy: a folder or a URL")
    copy.add_argument(
        "dst", metavar="DST", help="where to copy it: a folder or a URL (created if missing)"
    )
    copy.add_argument(
        "--allow-extra",
        action="store_true",
        help="DST may hold items that SRC does not have (they are kept; the checksum then "
        "covers SRC's ids only)",
    )
    copy.add_argument(
        "--chunk-size",
        type=int,
        default=gallery_copy.CHUNK,
        help=f"items per write (default: {gallery_copy.CHUNK})",
    )
    copy.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> gallery_copy.CopyResult:
    if args.action != "copy":  # argparse allows only the actions above
        raise ValueError(f"unknown action {args.action!r}")
    return copy(args)


def copy(args: argparse.Namespace) -> gallery_copy.CopyResult:
    result = gallery_copy.copy_gallery(
        args.src, args.dst, chunk_size=args.chunk_size, allow_extra=args.allow_extra,
        progress=not args.no_progress,
    )  # fmt: skip
    check = result.verification
    assert check is not None  # a copy without max_chunks always completes
    print(f"copied {result.copied} items of {result.src} to {result.dst} "
          f"({result.skipped} already there), model {result.model_id}")  # fmt: skip
    print(f"SRC {result.src}: {check.src_count} items, sha256 {check.src_sha256}")
    extra = f", {check.extra} not in SRC, sha256 over SRC's ids" if check.extra else ", sha256"
    print(f"DST {result.dst}: {check.dst_count} items{extra} {check.dst_sha256}")
    if check.problems:
        raise RuntimeError("verification failed: " + "; ".join(check.problems))
    print("verified: DST holds every item of SRC, checksums equal")
    return result
