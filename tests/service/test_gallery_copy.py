"""`service.gallery_copy`: a gallery copied between backends, resumed, verified.

Every test runs over the pairs of backends in `tests.galleries.BACKEND_PAIRS`: folder->folder,
folder->postgres and postgres->folder (on the session's real PostgreSQL).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.constants import GALLERY_DB_FILE
from service.gallery import (
    GalleryModelMismatchError,
    is_database_url,
    open_gallery,
    stored_model,
)
from service.gallery_copy import checksum, copy_gallery
from tests.galleries import (
    BACKEND_PAIRS,
    MODEL_A,
    MODEL_B,
    assert_same_records,
    fill,
    location,
    records,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKEND_PAIRS)
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(source, destination): two new, empty locations of the parameter's backends."""
    src_kind, dst_kind = request.param
    return (
        location(src_kind, "src", request, tmp_path),
        location(dst_kind, "dst", request, tmp_path),
    )


def checksum_of(where: str, model: dict = MODEL_A) -> tuple[int, str]:
    with open_gallery(where, **model) as g:
        return checksum(g)


def test_copy_keeps_every_item_bit_for_bit_in_order(pair: tuple[str, str]) -> None:
    src, dst = pair
    kept = fill(src, 40, remove_every=4)  # deletes at the start, the middle and the end
    assert len(kept) == 30
    before = checksum_of(src)
    expected = records(src)

    result = copy_gallery(src, dst, chunk_size=7, progress=False)

    assert (result.read, result.copied, result.skipped, result.complete) == (30, 30, 0, True)
    check = result.verification
    assert check is not None and check.ok, check.problems
    assert (check.src_count, check.dst_count, check.extra, check.missing) == (30, 30, 0, [])
    assert check.src_sha256 == check.dst_sha256 == before[1]
    assert stored_model(dst) == stored_model(src)
    assert_same_records(records(dst), expected)
    assert checksum_of(src) == before  # the source is only read
    assert_same_records(records(src), expected)
    # the copy searches like the source: its index was built from the copied vectors
    with open_gallery(src, **MODEL_A) as a:
        near_src = a.search_by_id(kept[5], k=5)
    with open_gallery(dst, **MODEL_A) as b:
        near_dst = b.search_by_id(kept[5], k=5)
    assert [(n.id, n.label) for n in near_dst] == [(n.id, n.label) for n in near_src]
    assert np.allclose([n.distance for n in near_dst], [n.distance for n in near_src])

    again = copy_gallery(src, dst, progress=False)  # nothing left to do
    assert (again.copied, again.skipped) == (0, 30)
    assert again.verification is not None and again.verification.ok
    assert_same_records(records(dst), expected)


def test_interrupted_copy_resumes_without_duplicates(pair: tuple[str, str]) -> None:
    src, dst = pair
    fill(src, 45, remove_every=5)  # 36 items
    before = checksum_of(src)
    expected = records(src)

    cut = copy_gallery(src, dst, chunk_size=8, max_chunks=2, progress=False)
    assert (cut.complete, cut.copied, cut.verification) == (False, 16, None)
    assert [r.id for r in records(dst)] == [r.id for r in expected[:16]]

    resumed = copy_gallery(src, dst, chunk_size=8, progress=False)
    assert (resumed.complete, resumed.copied, resumed.skipped) == (True, 20, 16)
    assert resumed.verification is not None and resumed.verification.ok
    got = records(dst)
    assert len({r.id for r in got}) == len(got) == 36
    assert_same_records(got, expected)
    assert checksum_of(src) == before


def _count(where: str) -> int:
    """Items in a gallery that another process is writing (a folder is locked by it)."""
    if not is_database_url(where):
        path = Path(where) / GALLERY_DB_FILE
        if not path.exists():
            return 0
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM items").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0
        finally:
            db.close()
    if stored_model(where) is None:
        return 0
    with open_gallery(where, **MODEL_A) as g:
        return len(g)


def test_copy_killed_midway_resumes(pair: tuple[str, str]) -> None:
    src, dst = pair
    fill(src, 300, remove_every=7)
    expected = records(src)
    code = ("import sys; from service.gallery_copy import copy_gallery; "
            "copy_gallery(sys.argv[1], sys.argv[2], chunk_size=1, progress=False)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, src, dst], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while _count(dst) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the copy finished before it could be killed"
    done = _count(dst)
    assert 3 <= done < len(expected)

    resumed = copy_gallery(src, dst, progress=False)
    assert resumed.skipped == done and resumed.copied == len(expected) - done
    assert resumed.verification is not None and resumed.verification.ok
    assert_same_records(records(dst), expected)


def test_destination_of_another_model_is_refused_unchanged(pair: tuple[str, str]) -> None:
    src, dst = pair
    fill(src, 10)
    fill(dst, 4, model=MODEL_B, seed=1)
    src_before, dst_before = checksum_of(src), checksum_of(dst, MODEL_B)

    with pytest.raises(GalleryModelMismatchError, match="synth:2"):
        copy_gallery(src, dst, progress=False)

    assert stored_model(dst).model_sha256 == MODEL_B["model_sha256"]
    assert checksum_of(dst, MODEL_B) == dst_before
    assert checksum_of(src) == src_before


def test_extra_items_in_the_destination_fail_unless_allowed(pair: tuple[str, str]) -> None:
    src, dst = pair
    fill(src, 10)
    fill(dst, 3, seed=1)  # same model, other items

    result = copy_gallery(src, dst, progress=False)
    check = result.verification
    assert check is not None and not check.ok
    assert (check.src_count, check.dst_count, check.extra) == (10, 13, 3)
    assert check.src_sha256 == check.dst_sha256  # over the source's ids
    assert any("--allow-extra" in p for p in check.problems)

    allowed = copy_gallery(src, dst, allow_extra=True, progress=False)
    assert (allowed.copied, allowed.skipped) == (0, 10)
    assert allowed.verification is not None and allowed.verification.ok


def test_verification_catches_an_item_that_differs(pair: tuple[str, str]) -> None:
    """An id already in the destination is skipped, so a stale or damaged copy of it must
    be caught by the checksum: here one vector differs in its last bit."""
    src, dst = pair
    fill(src, 12)
    first = records(src)[0]
    vector = first.vector.copy()
    vector[0] = np.nextafter(vector[0], np.float32(np.inf))
    with open_gallery(dst, **MODEL_A) as g:
        g.import_records([type(first)(**{**first.__dict__, "vector": vector})])

    check = copy_gallery(src, dst, progress=False).verification
    assert check is not None and check.src_count == check.dst_count == 12
    assert check.src_sha256 != check.dst_sha256
    assert check.problems == ["the checksums differ"]


def test_missing_source_and_same_location(tmp_path: Path) -> None:
    src, dst = tmp_path / "nothing", tmp_path / "dst"
    with pytest.raises(FileNotFoundError, match="no gallery at"):
        copy_gallery(src, dst, progress=False)
    assert not src.exists() and not dst.exists()  # nothing created on either side
    fill(str(dst), 2)
    with pytest.raises(ValueError, match="same gallery"):
        copy_gallery(dst, tmp_path / "." / "dst", progress=False)
