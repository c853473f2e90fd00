"""The gallery: storage round trips, exact Euclidean search, durability, model binding.

Most tests run against both backends (`location`: a folder, or a database on the session's
real PostgreSQL + pgvector); those about files, the folder lock and crashes of a writer
process are the folder's own. PostgreSQL's own tests are in test_gallery_postgres.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.gallery import (
    Gallery,
    GalleryBackend,
    GalleryLockedError,
    GalleryModelMismatchError,
    NewItem,
    StoredImage,
    open_gallery,
    stored_model,
)

DIM = 4096
MODEL_A = {"model_sha256": "a" * 64, "model_id": "synth:1"}
MODEL_B = {"model_sha256": "b" * 64, "model_id": "synth:2"}
REPO = Path(__file__).resolve().parents[2]


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    """FC7-like vectors: non-negative float32, (n, DIM)."""
    return np.random.default_rng(seed).random((n, DIM), dtype=np.float32)


def _new(vector: np.ndarray, i: int = 0) -> NewItem:
    return NewItem(
        image_bytes=f"\xff\xd8 image {i}".encode() + bytes(range(256)),
        image_ext=".jpg",
        vector=vector,
        label=f"class{i % 3}",
        metadata={"i": i, "tags": ["a", "b"], "note": "ünïcode"},
    )


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "images").iterdir())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "gallery"


@pytest.fixture(params=["folder", "postgres"])
def location(request: pytest.FixtureRequest, root: Path) -> Path | str:
    """Where a test's gallery lives: a folder, or a fresh PostgreSQL database's URL."""
    return root if request.param == "folder" else request.getfixturevalue("pg_url")


def open_at(location: Path | str, model: dict = MODEL_A) -> GalleryBackend:
    return open_gallery(location, **model)


def _folder_files(location: Path | str) -> list[str] | None:
    """The image files of a folder gallery; None for a database (no files)."""
    return _files(location) if isinstance(location, Path) else None


@pytest.fixture
def gallery(location: Path | str) -> Iterator[GalleryBackend]:
    with open_at(location) as g:
        yield g


def test_add_get_list_remove_round_trip(gallery: GalleryBackend, location: Path | str) -> None:
    folder = location if isinstance(location, Path) else None
    vectors = _vectors(5)
    new = [_new(v, i) for i, v in enumerate(vectors)]
    ids = gallery.add(new)
    assert len(ids) == 5 and len(set(ids)) == 5 and len(gallery) == 5
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    if folder:
        assert (folder / "gallery.sqlite3").is_file()

    item = gallery.get(ids[2])
    assert item is not None and item.vector is None
    assert (item.id, item.label, item.metadata) == (ids[2], "class2", new[2].metadata)
    assert item.image_ext == ".jpg"
    if folder:
        assert (folder / "images" / f"{ids[2]}.jpg").read_bytes() == new[2].image_bytes
    assert gallery.image(ids[2]) == StoredImage(new[2].image_bytes, ".jpg")
    assert item.created_at and len(item.image_sha256 or "") == 64
    full = gallery.get(ids[2], with_vector=True)
    assert full is not None and full.vector is not None
    np.testing.assert_array_equal(full.vector, vectors[2])

    items, total = gallery.list()
    assert total == 5 and [i.id for i in items] == ids

    assert gallery.remove(ids[1]) is True
    assert gallery.get(ids[1]) is None and gallery.image(ids[1]) is None
    if folder:
        assert not (folder / "images" / f"{ids[1]}.jpg").exists()
    assert gallery.remove(ids[1]) is False
    items, total = gallery.list()
    assert total == 4 and [i.id for i in items] == [ids[0], *ids[2:]]
    assert len(gallery) == 4


def test_list_pages_in_insertion_order(gallery: GalleryBackend) -> None:
    ids = gallery.add([_new(v, i) for i, v in enumerate(_vectors(7))])
    ids += gallery.add([_new(v, i) for i, v in enumerate(_vectors(5, seed=1))])
    pages = [gallery.list(offset, 5) for offset in (0, 5, 10, 15)]
    assert [total for _, total in pages] == [12, 12, 12, 12]
    assert [len(page) for page, _ in pages] == [5, 5, 2, 0]
    assert [item.id for page, _ in pages for item in page] == ids
    with pytest.raises(ValueError):
        gallery.list(-1, 5)


def test_label_none_and_empty_metadata(gallery: GalleryBackend) -> None:
    [item_id] = gallery.add([NewItem(b"png", ".PNG", _vectors(1)[0])])
    item = gallery.get(item_id)
    assert item is not None
    assert (item.label, item.metadata, item.image_ext) == (None, {}, ".png")


def test_search_distances_are_euclidean(gallery: GalleryBackend) -> None:
    vectors = _vectors(30)
    ids = gallery.add([_new(v, i) for i, v in enumerate(vectors)])
    query = _vectors(1, seed=99)[0]
    # Computed independently, in float64.
    expected = np.linalg.norm(vectors.astype(np.float64) - query.astype(np.float64), axis=1)
    order = np.argsort(expected)

    neighbors = gallery.search(query, k=10)
    assert [n.id for n in neighbors] == [ids[i] for i in order[:10]]
    np.testing.assert_allclose([n.distance for n in neighbors], expected[order[:10]], rtol=1e-5)
    assert [n.distance for n in neighbors] == sorted(n.distance for n in neighbors)
    assert neighbors[0].label == f"class{order[0] % 3}"
    assert neighbors[0].metadata["i"] == order[0]

    # An item's own vector finds itself first, at distance ~0.
    for i in (0, 17):
        first = gallery.search(vectors[i], k=3)[0]
        assert first.id == ids[i] and first.distance == pytest.approx(0.0, abs=1e-3)


def test_search_edges(gallery: GalleryBackend) -> None:
    query = _vectors(1, seed=5)[0]
    assert gallery.search(query, k=5) == []
    ids = gallery.add([_new(v, i) for i, v in enumerate(_vectors(4))])
    assert sorted(n.id for n in gallery.search(query, k=50)) == sorted(ids)

    by_id = gallery.search_by_id(ids[0], k=2)
    assert by_id is not None and by_id[0].id == ids[0] and len(by_id) == 2
    without = gallery.search_by_id(ids[0], k=10, exclude_self=True)
    assert without is not None and sorted(n.id for n in without) == sorted(ids[1:])
    assert gallery.search_by_id("0" * 32, k=3) is None

    for bad in (np.zeros(DIM - 1, np.float32), np.full(DIM, np.nan, np.float32)):
        with pytest.raises(ValueError):
            gallery.search(bad, k=1)
    with pytest.raises(ValueError):
        gallery.search(query, k=0)


def test_exclude_self_with_an_exact_duplicate(gallery: GalleryBackend) -> None:
    vector = _vectors(1)[0]
    first, twin = gallery.add([_new(vector, 0), _new(vector, 1)])
    neighbors = gallery.search_by_id(first, k=1, exclude_self=True)
    assert neighbors is not None and [n.id for n in neighbors] == [twin]


def test_remove_takes_effect_immediately(gallery: GalleryBackend) -> None:
    vectors = _vectors(6)
    ids = gallery.add([_new(v, i) for i, v in enumerate(vectors)])
    assert gallery.search(vectors[3], k=1)[0].id == ids[3]
    assert gallery.remove(ids[3])
    assert ids[3] not in [n.id for n in gallery.search(vectors[3], k=10)]
    assert len(gallery.search(vectors[3], k=10)) == 5
    assert gallery.list()[1] == 5
    assert gallery.remove(ids[3]) is False


def test_reopen_gives_same_items_and_results(location: Path | str) -> None:
    vectors, query = _vectors(12), _vectors(1, seed=3)[0]
    with open_at(location) as g:
        ids = g.add([_new(v, i) for i, v in enumerate(vectors)])
        g.remove(ids[4])
        before = g.search(query, k=20)
        listed = g.list()
    with open_at(location) as g:
        assert len(g) == 11 and g.list() == listed
        assert g.search(query, k=20) == before
        assert g.model_id == "synth:1" and g.model_sha256 == "a" * 64


CRASH_CHILD = """
import os, signal, sys
import numpy as np
from service.gallery import Gallery, NewItem
g = Gallery.open(sys.argv[1], model_sha256="a" * 64, model_id="synth:1")
vectors = np.random.default_rng(7).random((6, 4096), dtype=np.float32)
for batch in (vectors[:2], vectors[2:5], vectors[5:]):
    ids = g.add([NewItem(b"bytes", ".jpg", v) for v in batch])
    print(*ids, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit, no flush of anything else
"""


def test_added_items_survive_sigkill(root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(root)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ids = proc.stdout.split()
    assert len(ids) == 6
    vectors = np.random.default_rng(7).random((6, DIM), dtype=np.float32)
    with Gallery.open(root, **MODEL_A) as g:
        assert len(g) == 6
        for item_id, vector in zip(ids, vectors, strict=True):
            item = g.get(item_id)
            assert item is not None and g.image(item_id) == StoredImage(b"bytes", ".jpg")
            first = g.search(vector, k=1)[0]
            assert first.id == item_id and first.distance == pytest.approx(0.0, abs=1e-3)


def test_orphan_image_files_are_removed_at_open(root: Path) -> None:
    with Gallery.open(root, **MODEL_A) as g:
        [kept] = g.add([_new(_vectors(1)[0])])
    images = root / "images"
    orphan, tmp = images / f"{'f' * 32}.jpg", images / f".tmp-{'e' * 32}-{'d' * 32}.jpg"
    foreign = images / "README.txt"  # not a name the gallery writes: left alone
    for path in (orphan, tmp, foreign):
        path.write_bytes(b"x")
    with Gallery.open(root, **MODEL_A) as g:
        assert _files(root) == sorted(["README.txt", f"{kept}.jpg"])
        assert g.get(kept) is not None


def test_model_binding(location: Path | str) -> None:
    assert stored_model(location) is None  # no gallery there yet
    with open_at(location) as g:
        g.add([_new(_vectors(1)[0])])
    with pytest.raises(GalleryModelMismatchError) as err:
        open_at(location, MODEL_B)
    message = str(err.value)
    kind = "folder" if isinstance(location, Path) else "database"
    for part in ("synth:1", "synth:2", "alexnet reindex", f"another gallery {kind}"):
        assert part in message
    assert isinstance(err.value, RuntimeError)
    # The failed open released the folder; the same model reopens fine.
    with open_at(location) as g:
        assert len(g) == 1
    binding = stored_model(location)
    assert binding is not None and (binding.model_id, binding.dim) == ("synth:1", DIM)


def test_replace_vectors_switches_model(location: Path | str) -> None:
    old, new = _vectors(5), _vectors(5, seed=1)
    with open_at(location) as g:
        ids = g.add([_new(v, i) for i, v in enumerate(old)])
        images = dict(g.iter_images())
        assert list(images) == ids
        assert [images[i] for i in ids] == [_new(v, i).image_bytes for i, v in enumerate(old)]
        with pytest.raises(ValueError, match="missing"):
            g.replace_vectors(dict(zip(ids[:4], new[:4], strict=True)), **MODEL_B)
        assert g.model_id == "synth:1"

        g.replace_vectors(dict(zip(ids, new, strict=True)), **MODEL_B)
        assert (g.model_id, g.model_sha256) == ("synth:2", "b" * 64)
        hit = g.search(new[2], k=1)[0]
        assert hit.id == ids[2] and hit.distance == pytest.approx(0.0, abs=1e-3)
        assert g.search(old[2], k=1)[0].distance > 1.0
    with pytest.raises(GalleryModelMismatchError):
        open_at(location)
    with open_at(location, MODEL_B) as g:
        stored = g.get(ids[3], with_vector=True)
        assert stored is not None and stored.vector is not None
        np.testing.assert_array_equal(stored.vector, new[3])


BAD_ITEMS = {
    "short vector": {"vector": np.zeros(DIM - 1, np.float32)},
    "2-d vector": {"vector": np.zeros((1, DIM), np.float32)},
    "NaN": {"vector": np.where(np.arange(DIM) == 7, np.nan, 0).astype(np.float32)},
    "inf": {"vector": np.full(DIM, np.inf, np.float32)},
    "float32 overflow": {"vector": np.full(DIM, 1e300)},
    "object in metadata": {"metadata": {"x": object()}},
    "NaN in metadata": {"metadata": {"x": float("nan")}},
    "metadata not a dict": {"metadata": [1, 2]},
    "path in ext": {"image_ext": "/../x"},
    "no ext": {"image_ext": ""},
    "empty image": {"image_bytes": b""},
}


@pytest.mark.parametrize("bad", BAD_ITEMS.values(), ids=BAD_ITEMS.keys())
def test_invalid_batch_writes_nothing(
    gallery: GalleryBackend, location: Path | str, bad: dict
) -> None:
    vectors = _vectors(3)
    gallery.add([_new(vectors[0])])
    files_before = _folder_files(location)
    # The bad item last: the good ones before it must not be written either.
    batch = [_new(vectors[1], 1), _new(vectors[2], 2), replace(_new(vectors[2], 3), **bad)]
    with pytest.raises(ValueError):
        gallery.add(batch)
    assert len(gallery) == 1 and gallery.list()[1] == 1
    assert _folder_files(location) == files_before


@pytest.mark.parametrize(
    "bad_id",
    ["../../etc/passwd", "1 OR 1=1", "' OR '1'='1", "", "A" * 32, "0" * 31, "0" * 32 + "\n", None],
)
def test_malformed_ids_are_not_found(gallery: GalleryBackend, bad_id: str) -> None:
    [item_id] = gallery.add([_new(_vectors(1)[0])])
    assert gallery.get(bad_id) is None
    assert gallery.image(bad_id) is None
    assert gallery.search_by_id(bad_id, k=1) is None
    assert gallery.remove(bad_id) is False
    assert gallery.get(item_id) is not None and len(gallery) == 1


def test_folder_is_open_once(root: Path) -> None:
    with Gallery.open(root, **MODEL_A):
        with pytest.raises(GalleryLockedError):
            Gallery.open(root, **MODEL_A)
    with Gallery.open(root, **MODEL_A) as again:
        assert len(again) == 0


def test_closed_gallery_refuses_calls(gallery: GalleryBackend, location: Path | str) -> None:
    gallery.close()
    gallery.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        gallery.list()
    with open_at(location) as again:
        assert len(again) == 0


def test_concurrent_adds_and_searches(gallery: GalleryBackend) -> None:
    vectors = _vectors(40)
    added: list[str] = []
    errors: list[BaseException] = []

    def writer(part: np.ndarray) -> None:
        try:
            for v in part:
                added.extend(gallery.add([_new(v)]))
        except BaseException as e:  # surfaced below: threads swallow exceptions
            errors.append(e)

    def reader() -> None:
        try:
            for v in vectors[:10]:
                for n in gallery.search(v, k=5):
                    assert len(n.id) == 32
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(vectors[i::2],)) for i in range(2)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(gallery) == 40 and gallery.list(0, 100)[1] == 40 and len(set(added)) == 40
    for i in (0, 39):
        assert gallery.search(vectors[i], k=1)[0].distance == pytest.approx(0.0, abs=1e-3)


def _fill(g: GalleryBackend, vectors: np.ndarray, tag: int) -> list[str]:
    """`add_vectors` with a label and metadata per row, sharing one image file."""
    return g.add_vectors(
        vectors, image_bytes=b"\xff\xd8 shared %d" % tag, image_ext=".JPG",
        labels=[f"bulk{tag}"] * len(vectors),
        metadata=[{"tag": tag, "j": j} for j in range(len(vectors))],
    )  # fmt: skip


def test_add_vectors_fills_rows_that_share_one_image(location: Path | str) -> None:
    own, first_fill, second_fill = _vectors(1, seed=10), _vectors(40, seed=11), _vectors(25, 12)
    query = _vectors(1, seed=13)[0]
    folder = location if isinstance(location, Path) else None
    with open_at(location) as g:
        [own_id] = g.add([_new(own[0])])
        first, second = _fill(g, first_fill, 1), _fill(g, second_fill, 2)
        ids, vectors = [own_id, *first, *second], np.concatenate([own, first_fill, second_fill])
        assert len(set(ids)) == 66 and len(g) == 66
        assert [item.id for item in g.list(0, 100)[0]] == ids

        item = g.get(second[3], with_vector=True)
        assert item is not None and item.vector is not None
        assert (item.label, item.metadata) == ("bulk2", {"tag": 2, "j": 3})
        np.testing.assert_array_equal(item.vector, second_fill[3])
        assert g.image(second[3]) == StoredImage(b"\xff\xd8 shared 2", ".jpg")
        assert item.image_ext == ".jpg" and len(item.image_sha256 or "") == 64
        # One file per call, written once; it is what image and iter_images give.
        if folder:
            assert len(_files(folder)) == 3
        assert {g.image(i).data for i in first} == {b"\xff\xd8 shared 1"}
        assert {data for i, data in g.iter_images() if i in second} == {b"\xff\xd8 shared 2"}

        # Real search over every row: exact Euclidean distances, in float64 here.
        expected = np.linalg.norm(vectors.astype(np.float64) - query.astype(np.float64), axis=1)
        order = np.argsort(expected)
        neighbors = g.search(query, k=10)
        assert [n.id for n in neighbors] == [ids[i] for i in order[:10]]
        np.testing.assert_allclose([n.distance for n in neighbors], expected[order[:10]], rtol=1e-5)
        hit = g.search_by_id(first[7], k=1)
        assert hit is not None and hit[0].id == first[7] and hit[0].metadata == {"tag": 1, "j": 7}

        # The shared file goes with the last of its rows, not before.
        assert g.remove(second[0]) and g.image(second[1]).data == b"\xff\xd8 shared 2"
        assert _folder_files(location) is None or len(_files(folder)) == 3
        for item_id in second[1:]:
            assert g.remove(item_id)
        assert _folder_files(location) is None or len(_files(folder)) == 2

    kept = [i for i in range(66) if ids[i] not in set(second)]
    with open_at(location) as g:  # the rows survive a reopen, the file is kept
        assert len(g) == 41 and (folder is None or len(_files(folder)) == 2)
        neighbors = g.search(query, k=41)
        want = sorted(kept, key=lambda i: expected[i])
        assert [n.id for n in neighbors] == [ids[i] for i in want]
        np.testing.assert_allclose([n.distance for n in neighbors], expected[want], rtol=1e-5)
        assert g.image(first[0]).data == b"\xff\xd8 shared 1"


BAD_FILLS = {
    "short vectors": {"vectors": np.zeros((2, DIM - 1), np.float32)},
    "one vector, not a stack": {"vectors": np.zeros(DIM, np.float32)},
    "NaN": {"vectors": np.full((2, DIM), np.nan, np.float32)},
    "fewer labels": {"labels": ["a"]},
    "label not a string": {"labels": ["a", 3]},
    "more metadata": {"metadata": [{}, {}, {}]},
    "object in metadata": {"metadata": [{}, {"x": object()}]},
    "path in ext": {"image_ext": "/../x"},
    "empty image": {"image_bytes": b""},
}


@pytest.mark.parametrize("bad", BAD_FILLS.values(), ids=BAD_FILLS.keys())
def test_invalid_fill_writes_nothing(
    gallery: GalleryBackend, location: Path | str, bad: dict
) -> None:
    gallery.add([_new(_vectors(1)[0])])
    files_before = _folder_files(location)
    fill = {"image_bytes": b"x", "image_ext": ".jpg", "labels": ["a", "b"]} | bad
    vectors = fill.pop("vectors", _vectors(2, seed=1))
    with pytest.raises(ValueError):
        gallery.add_vectors(vectors, **fill)
    assert len(gallery) == 1 and gallery.list()[1] == 1
    assert _folder_files(location) == files_before
    empty = gallery.add_vectors(np.empty((0, DIM), np.float32), image_bytes=b"x", image_ext=".jpg")
    assert empty == [] and _folder_files(location) == files_before and len(gallery) == 1
