"""The persisted compressed index (gallery.faiss): read back at open instead of rebuilt, brought
up to date with the rows committed after it, and never used when it does not fit them."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.durable import TMP_PREFIX
from service.gallery import Gallery
from service.gallery.index_file import INDEX_FILE
from tests.service.test_gallery_compressed import (
    MODEL,
    REPO,
    THRESHOLD,
    _answers,
    _assert_same,
    _exact_answers,
    _new,
    fc7_like,
)

READ = "read the index file"  # what the gallery logs when it uses the file
TRAINED = "training a compressed index"  # and when it builds a new index


def _open(root: Path, caplog: pytest.LogCaptureFixture, **kw) -> tuple[Gallery, str]:
    """The gallery at `root` (exact_max=THRESHOLD), and what its opening logged."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="service.gallery"):
        g = Gallery.open(root, **{"exact_max": THRESHOLD, **MODEL, **kw})
    return g, caplog.text


def _filled(root: Path, vectors: np.ndarray) -> list[str]:
    """A closed compressed gallery of `vectors` (item number = position); their ids."""
    with Gallery.open(root, exact_max=THRESHOLD, **MODEL) as g:
        ids = g.add([_new(v, i) for i, v in enumerate(vectors)])
        assert g.index_kind == "compressed"
    assert (root / INDEX_FILE).is_file()
    return ids


def test_reopen_reads_the_file_and_answers_the_same(tmp_path: Path, caplog) -> None:
    vectors, queries = fc7_like(400, seed=11), fc7_like(20, seed=12)
    root = tmp_path / "g"
    with Gallery.open(root, exact_max=THRESHOLD, **MODEL) as g:
        g.add([_new(v, i) for i, v in enumerate(vectors[:THRESHOLD])])
        assert not (root / INDEX_FILE).exists()  # the exact index lives in memory only
        g.add([_new(v, i) for i, v in enumerate(vectors[THRESHOLD:], start=THRESHOLD)])
        before = _answers(g, queries)
    g, logged = _open(root, caplog)
    with g:
        assert READ in logged and TRAINED not in logged
        assert g.index_kind == "compressed" and len(g) == 400
        assert _answers(g, queries) == before
    _assert_same(before, _exact_answers(vectors, list(range(400)), queries))
    g, logged = _open(root, caplog, exact_max=1000)  # exact again: the file goes
    with g:
        assert g.index_kind == "exact" and "removed the index file" in logged
        _assert_same(_answers(g, queries), before)
    assert not (root / INDEX_FILE).exists()


CRASH_CHILD = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from tests.service.test_gallery_compressed import fc7_like, _new
from service.gallery import Gallery
vectors = fc7_like(450, seed=13)
with Gallery.open(sys.argv[1], exact_max=200, model_sha256="c" * 64, model_id="synth:1") as g:
    ids = g.add([_new(v, i) for i, v in enumerate(vectors[:400])])
g = Gallery.open(sys.argv[1], exact_max=200, model_sha256="c" * 64, model_id="synth:1")
for item_id in ids[:10] + ids[-1:]:  # the last row too: its rowid must not come back
    assert g.remove(item_id)
added = g.add([_new(v, i) for i, v in enumerate(vectors[400:], start=400)])
print(*ids, *added, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(): the file is the one of the first close
"""


def test_rows_committed_after_the_file_are_caught_up_after_a_crash(tmp_path: Path, caplog) -> None:
    root = tmp_path / "g"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(root), str(REPO)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ids = proc.stdout.split()
    assert len(ids) == 450
    vectors = fc7_like(450, seed=13)
    gone = [*range(10), 399]
    keep = [i for i in range(450) if i not in gone]
    queries = vectors[gone] + 0.01  # each one's nearest stored vector was deleted
    g, logged = _open(root, caplog)
    with g:
        assert READ in logged and "(11 removed, 50 added)" in logged and TRAINED not in logged
        assert len(g) == 439 and g.index_kind == "compressed"
        got = _answers(g, queries)
        assert not {i for row in got for i, _ in row} & set(gone)
        _assert_same(got, _exact_answers(vectors, keep, queries))
        for n in range(400, 450, 7):  # the added rows are found
            [hit] = g.search(vectors[n], k=1)
            assert hit.id == ids[n] and hit.distance == pytest.approx(0.0, abs=1e-3)
    g, logged = _open(root, caplog)  # caught up and written again: nothing to catch up
    with g:
        assert "(0 removed, 0 added)" in logged
        _assert_same(_answers(g, queries), _exact_answers(vectors, keep, queries))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # in the codes: FAISS would read it without a complaint
    path.write_bytes(bytes(data))


def _stamp_garbage(path: Path) -> None:
    magic, _, rest = path.read_bytes().partition(b"\n")
    path.write_bytes(magic + b"\n{not json\n" + rest.partition(b"\n")[2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, _stamp_garbage, _empty])
def test_a_damaged_file_is_rebuilt_with_the_right_answers(tmp_path: Path, caplog, damage) -> None:
    vectors, queries = fc7_like(300, seed=14), fc7_like(10, seed=15)
    root = tmp_path / "g"
    _filled(root, vectors)
    damage(root / INDEX_FILE)
    leftover = root / f"{TMP_PREFIX}0123-{INDEX_FILE}"  # a write cut off by a crash
    leftover.write_bytes(b"half an index")
    g, logged = _open(root, caplog)
    with g:
        assert "not using the index file" in logged and TRAINED in logged
        assert not leftover.exists()
        _assert_same(_answers(g, queries), _exact_answers(vectors, list(range(300)), queries))
    g, logged = _open(root, caplog)  # the rebuilt index was written
    with g:
        assert READ in logged and TRAINED not in logged


@pytest.mark.parametrize("model", [{"model_sha256": "d" * 64, "model_id": "synth:2"}, MODEL])
def test_a_file_from_before_replace_vectors_is_not_used(
    tmp_path: Path, caplog, model: dict
) -> None:
    """Another model, or the same model's file with vectors made anew: the old file, put
    back as if the process died before writing the new one, must not serve."""
    old, new = fc7_like(300, seed=16), fc7_like(300, seed=17)
    root = tmp_path / "g"
    ids = _filled(root, old)
    shutil.copy(root / INDEX_FILE, tmp_path / "old.faiss")
    with Gallery.open(root, exact_max=THRESHOLD, **MODEL) as g:
        g.replace_vectors(dict(zip(ids, new, strict=True)), **model)
    shutil.copy(tmp_path / "old.faiss", root / INDEX_FILE)
    g, logged = _open(root, caplog, **model)
    with g:
        reason = "another model" if model != MODEL else "the vectors were replaced after it"
        assert reason in logged and READ not in logged
        queries = new[:10] + 0.01
        _assert_same(_answers(g, queries), _exact_answers(new, list(range(300)), queries))


def test_a_file_that_does_not_fit_the_rows_is_not_used(tmp_path: Path, caplog) -> None:
    """Ahead of the rows (a database put back from a backup), of another gallery, or with
    lists made for far fewer vectors than the rows."""
    vectors, queries = fc7_like(400, seed=18), fc7_like(10, seed=19)
    root, other = tmp_path / "g", tmp_path / "other"
    _filled(root, vectors[:300])
    _filled(other, vectors[:300])
    shutil.copy(root / "gallery.sqlite3", tmp_path / "backup.sqlite3")
    with Gallery.open(root, exact_max=THRESHOLD, **MODEL) as g:
        g.add([_new(v, i) for i, v in enumerate(vectors[300:], start=300)])
    shutil.copy(tmp_path / "backup.sqlite3", root / "gallery.sqlite3")
    g, logged = _open(root, caplog)
    with g:
        assert "it is ahead of the rows" in logged and TRAINED in logged
        _assert_same(_answers(g, queries), _exact_answers(vectors, list(range(300)), queries))
    shutil.copy(other / INDEX_FILE, root / INDEX_FILE)
    g, logged = _open(root, caplog)
    with g:
        assert "written for another gallery" in logged and READ not in logged

    small = tmp_path / "small"  # lists made for 201 items, then past 4 x 201 of them
    _filled(small, fc7_like(201, seed=20))
    with Gallery.open(small, exact_max=THRESHOLD, **MODEL) as g:
        g.add([_new(v, i) for i, v in enumerate(fc7_like(700, seed=21), start=201)])
    g, logged = _open(small, caplog)
    with g:
        assert "its lists were sized for 201 vectors and the rows are 901" in logged
        assert TRAINED in logged and len(g) == 901
