"""The gallery's side of a model switch, on both backends: `switch_vectors` (the last step:
stragglers embedded, every vector and the binding swapped at once), vectors that carry their
model's sha256 into `add` and `search`, and a second replica that follows (`active_binding`,
`rebind`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.gallery import (
    GalleryBackend,
    GalleryModelChangedError,
    GalleryModelMismatchError,
    NewItem,
    open_gallery,
)

DIM = 4096
MODEL_A = {"model_sha256": "a" * 64, "model_id": "synth:1/fp32"}
MODEL_B = {"model_sha256": "b" * 64, "model_id": "synth:2/fp32"}


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, DIM), dtype=np.float32)


def _new(vector: np.ndarray, i: int) -> NewItem:
    return NewItem(image_bytes=f"image {i} ".encode() + bytes(range(256)), image_ext=".jpg",
                   vector=vector, label=f"c{i}")  # fmt: skip


@pytest.fixture(params=["folder", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    return tmp_path / "gallery" if request.param == "folder" else request.getfixturevalue("pg_url")


@pytest.fixture
def gallery(location: Path | str) -> Iterator[GalleryBackend]:
    with open_gallery(location, **MODEL_A) as g:
        yield g


def _files(location: Path | str) -> list[str] | None:
    return sorted(p.name for p in (location / "images").iterdir()) if isinstance(
        location, Path) else None  # fmt: skip


def test_switch_vectors_embeds_what_is_missing_and_swaps_at_once(
    gallery: GalleryBackend, location: Path | str
) -> None:
    old, new = _vectors(5, seed=1), _vectors(5, seed=2)
    ids = gallery.add([_new(v, i) for i, v in enumerate(old)])
    assert gallery.remove(ids[4])
    # made beforehand: items 0-2, and item 4, deleted since; item 3 came later
    pending = {ids[i]: new[i] for i in (0, 1, 2, 4)}
    asked: list[tuple[str, bytes]] = []

    def embed(images: list[tuple[str, bytes]]) -> dict[str, np.ndarray]:
        asked.extend(images)
        return {item_id: new[ids.index(item_id)] for item_id, _ in images}

    late = gallery.switch_vectors(pending, embed, from_sha256=MODEL_A["model_sha256"], **MODEL_B)
    assert late == 1 and asked == [(ids[3], gallery.image(ids[3]).data)]
    assert gallery.model_sha256 == MODEL_B["model_sha256"] == gallery.active_binding().model_sha256
    assert len(gallery) == 4 and gallery.ids() == ids[:4]
    for i in range(4):
        stored = gallery.get(ids[i], with_vector=True).vector
        assert np.array_equal(stored, new[i])
        (hit,) = gallery.search(new[i], k=1, model_sha256=MODEL_B["model_sha256"])
        assert hit.id == ids[i] and hit.distance < 1e-3

    # A vector of the old model meets the new binding: refused, nothing written.
    files = _files(location)
    with pytest.raises(GalleryModelChangedError, match="synth:2"):
        gallery.add([_new(old[0], 9)], model_sha256=MODEL_A["model_sha256"])
    with pytest.raises(GalleryModelChangedError):
        gallery.search(old[0], k=1, model_sha256=MODEL_A["model_sha256"])
    assert len(gallery) == 4 and _files(location) == files
    [added] = gallery.add([_new(new[4], 9)], model_sha256=MODEL_B["model_sha256"])
    assert gallery.search(new[4], k=1, model_sha256=MODEL_B["model_sha256"])[0].id == added

    # The gallery reopens bound to the new model, and refuses the old one.
    gallery.close()
    with open_gallery(location, **MODEL_B) as reopened:
        assert len(reopened) == 5
    with pytest.raises(GalleryModelMismatchError):
        open_gallery(location, **MODEL_A)


def test_switch_vectors_from_another_model_changes_nothing(gallery: GalleryBackend) -> None:
    old = _vectors(3, seed=3)
    ids = gallery.add([_new(v, i) for i, v in enumerate(old)])
    pending = dict(zip(ids, _vectors(3, seed=4), strict=True))
    with pytest.raises(GalleryModelChangedError):
        gallery.switch_vectors(pending, dict, from_sha256="c" * 64, **MODEL_B)
    failing = {**pending}
    del failing[ids[0]]

    def broken(images: list[tuple[str, bytes]]) -> dict[str, np.ndarray]:
        raise MemoryError("out of memory while embedding")

    with pytest.raises(MemoryError):
        gallery.switch_vectors(failing, broken, from_sha256=MODEL_A["model_sha256"], **MODEL_B)
    assert gallery.active_binding().model_sha256 == MODEL_A["model_sha256"]
    for item_id, vector in zip(ids, old, strict=True):
        assert np.array_equal(gallery.get(item_id, with_vector=True).vector, vector)
        assert gallery.search(vector, k=1, model_sha256=MODEL_A["model_sha256"])[0].id == item_id


def test_a_second_replica_follows_the_binding(pg_url: str) -> None:
    with open_gallery(pg_url, **MODEL_A) as a, open_gallery(pg_url, **MODEL_A) as b:
        old, new = _vectors(3, seed=5), _vectors(3, seed=6)
        ids = a.add([_new(v, i) for i, v in enumerate(old)])
        pending = dict(zip(ids, new, strict=True))
        a.switch_vectors(pending, dict, from_sha256=MODEL_A["model_sha256"], **MODEL_B)
        # b has not followed yet: its searches and adds with the old model are refused
        assert b.active_binding().model_id == "synth:2/fp32"
        with pytest.raises(GalleryModelChangedError):
            b.search(old[0], k=1)
        with pytest.raises(GalleryModelChangedError):
            b.add([_new(old[0], 7)])
        with pytest.raises(GalleryModelChangedError):
            b.rebind(a.active_binding().__class__("synth:1/fp32", "a" * 64, DIM))
        b.rebind(b.active_binding())
        assert b.model_id == "synth:2/fp32"
        assert b.search(new[1], k=1)[0].id == ids[1] and len(b) == 3
