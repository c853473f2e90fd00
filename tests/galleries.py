"""Galleries for the copy tests, on either backend (`tests/service/test_gallery_copy.py`,
`tests/alexnet/test_gallery_cli.py`).

The tests run over pairs of backends (`BACKEND_PAIRS`). The pairs with a PostgreSQL side
are skipped until `service.gallery.pg_gallery` exists (the backend is written on another
branch): once it is merged they run against the session's real PostgreSQL 18 + pgvector
(`pg_url` in tests/conftest.py), with nothing to change here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.gallery import ItemRecord, NewItem, open_gallery

MODEL_A = {"model_sha256": "a" * 64, "model_id": "synth:1"}
MODEL_B = {"model_sha256": "b" * 64, "model_id": "synth:2"}
DIM = 4096
EXTS = (".jpg", ".png", ".webp")

# (source backend, destination backend)
BACKEND_PAIRS = [
    pytest.param(("folder", "folder"), id="folder->folder"),
    pytest.param(("folder", "postgres"), id="folder->postgres"),
    pytest.param(("postgres", "folder"), id="postgres->folder"),
]


def location(kind: str, name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty gallery location of this kind: a folder under `tmp_path`, or a fresh
    database on the session's PostgreSQL."""
    if kind == "folder":
        return str(tmp_path / name)
    return request.getfixturevalue("pg_url")


def new_items(n: int, seed: int = 0) -> list[NewItem]:
    """n distinct items: full-precision float32 vectors (some negative), several image
    types, labels (some None) and nested unicode metadata."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    return [
        NewItem(
            image_bytes=f"image {seed}/{i} ".encode() + rng.bytes(64 + i),
            image_ext=EXTS[i % len(EXTS)],
            vector=vectors[i],
            label=None if i % 5 == 0 else f"class{i % 3}",
            metadata={"i": i, "seed": seed, "tags": ["a", "ü"], "nested": {"x": i / 7}},
        )
        for i in range(n)
    ]


def fill(
    where: str, n: int, *, model: dict = MODEL_A, seed: int = 0, remove_every: int = 0
) -> list[str]:
    """Create the gallery at `where` with n items, add them in three calls, then remove
    every `remove_every`-th one (the first included) if asked; the ids kept, in order."""
    items = new_items(n, seed)
    ids: list[str] = []
    with open_gallery(where, **model) as g:
        for start in range(0, n, max(1, n // 3)):
            ids += g.add(items[start : start + max(1, n // 3)])
        if remove_every:
            for item_id in ids[::remove_every]:
                assert g.remove(item_id)
            ids = [item_id for i, item_id in enumerate(ids) if i % remove_every]
    return ids


def records(where: str, model: dict = MODEL_A) -> list[ItemRecord]:
    """Every record of the gallery at `where`, in insertion order."""
    with open_gallery(where, **model) as g:
        return list(g.iter_records())


def assert_same_records(got: list[ItemRecord], expected: list[ItemRecord]) -> None:
    """Same items in the same order: every field equal, vectors bit for bit."""
    assert [r.id for r in got] == [r.id for r in expected]
    for a, b in zip(got, expected, strict=True):
        assert (a.label, a.metadata, a.created_at) == (b.label, b.metadata, b.created_at)
        assert (a.image_bytes, a.image_ext) == (b.image_bytes, b.image_ext)
        assert a.vector.dtype == b.vector.dtype == np.float32
        assert np.array_equal(a.vector, b.vector)
        assert a.vector.tobytes() == b.vector.tobytes()
