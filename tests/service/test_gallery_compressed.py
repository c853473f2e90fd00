"""The gallery above `exact_max` items: compressed index, same answers, same durability."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.gallery import Gallery, NewItem
from service.gallery.vector_index import CompressedIndex, ExactIndex

DIM = 4096
MODEL = {"model_sha256": "c" * 64, "model_id": "synth:1"}
REPO = Path(__file__).resolve().parents[2]
THRESHOLD = 200


def fc7_like(n: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Non-negative, sparse, clustered 4096-d vectors with a few directions of variation
    (what fc7 vectors of images of a few classes look like), float32 (n, DIM)."""
    rng = np.random.default_rng(seed)
    centres = rng.random((clusters, DIM), dtype=np.float32) * (rng.random(DIM) < 0.3)
    basis = rng.standard_normal((8, DIM)).astype(np.float32)
    spread = rng.standard_normal((n, 8)).astype(np.float32) @ basis * 0.2
    noise = rng.standard_normal((n, DIM)).astype(np.float32) * 0.05
    return np.maximum(centres[rng.integers(0, clusters, n)] + spread + noise, 0)


def _new(vector: np.ndarray, i: int) -> NewItem:
    return NewItem(image_bytes=b"jpeg %d" % i, image_ext=".jpg", vector=vector, metadata={"i": i})


def _answers(g: Gallery, queries: np.ndarray, k: int = 10) -> list[list[tuple[int, float]]]:
    """(item number, distance) of each query's neighbours."""
    return [[(n.metadata["i"], n.distance) for n in g.search(q, k=k)] for q in queries]


def _exact_answers(
    vectors: np.ndarray, keep: list[int], queries: np.ndarray, k: int = 10
) -> list[list[tuple[int, float]]]:
    """Brute force in float64, over the item numbers in `keep`."""
    sub = vectors[keep].astype(np.float64)
    out = []
    for q in queries.astype(np.float64):
        d = np.sqrt(((sub - q) ** 2).sum(1))
        order = np.argsort(d, kind="stable")[:k]
        out.append([(keep[j], float(d[j])) for j in order])
    return out


def _assert_same(got: list, want: list) -> None:
    for g_row, w_row in zip(got, want, strict=True):
        assert [i for i, _ in g_row] == [i for i, _ in w_row]
        assert [d for _, d in g_row] == pytest.approx([d for _, d in w_row], rel=1e-4)


def test_switches_above_threshold_and_answers_like_exact_search(tmp_path: Path) -> None:
    vectors = fc7_like(600)
    queries = fc7_like(30, seed=1)  # new vectors from the same distribution, not in the gallery
    with Gallery.open(tmp_path / "g", exact_max=THRESHOLD, **MODEL) as g:
        g.add([_new(v, i) for i, v in enumerate(vectors[:THRESHOLD])])
        assert g.index_kind == "exact"  # at the threshold, still exact
        g.add([_new(v, i) for i, v in enumerate(vectors[THRESHOLD:], start=THRESHOLD)])
        assert g.index_kind == "compressed" and len(g) == 600
        _assert_same(_answers(g, queries), _exact_answers(vectors, list(range(600)), queries))
        # its own nearest neighbour, and excluded when asked
        item = g.list(offset=123, limit=1)[0][0]
        [hit] = g.search_by_id(item.id, k=1)
        assert hit.id == item.id and hit.distance == pytest.approx(0.0, abs=1e-3)
        assert item.id not in [n.id for n in g.search_by_id(item.id, k=5, exclude_self=True)]


def test_deletes_and_restart_with_compressed_index(tmp_path: Path) -> None:
    vectors = fc7_like(500, seed=2)
    queries = vectors[:20] + 0.01  # near stored items: each query's first hit is a deletion
    root = tmp_path / "g"
    with Gallery.open(root, exact_max=THRESHOLD, **MODEL) as g:
        ids = g.add([_new(v, i) for i, v in enumerate(vectors)])
        assert g.index_kind == "compressed"
        for item_id in ids[:10]:
            assert g.remove(item_id)
        keep = list(range(10, 500))
        want = _exact_answers(vectors, keep, queries)
        got = _answers(g, queries)
        _assert_same(got, want)
        assert not {i for row in got for i, _ in row} & set(range(10))
    with Gallery.open(root, exact_max=THRESHOLD, **MODEL) as g:
        assert g.index_kind == "compressed" and len(g) == 490
        _assert_same(_answers(g, queries), want)
        assert g.get(ids[0]) is None
    with Gallery.open(root, exact_max=1000, **MODEL) as g:  # a larger threshold: exact again
        assert g.index_kind == "exact"
        _assert_same(_answers(g, queries), want)


def test_replace_vectors_keeps_compressed_index(tmp_path: Path) -> None:
    old, new = fc7_like(300, seed=3), fc7_like(300, seed=4)
    with Gallery.open(tmp_path / "g", exact_max=THRESHOLD, **MODEL) as g:
        ids = g.add([_new(v, i) for i, v in enumerate(old)])
        g.replace_vectors(
            dict(zip(ids, new, strict=True)), model_sha256="d" * 64, model_id="synth:2"
        )
        assert g.index_kind == "compressed"
        queries = new[:10] + 0.01
        _assert_same(_answers(g, queries), _exact_answers(new, list(range(300)), queries))


def test_add_vectors_crosses_the_threshold(tmp_path: Path) -> None:
    vectors, queries = fc7_like(500, seed=9), fc7_like(10, seed=10)
    with Gallery.open(tmp_path / "g", exact_max=THRESHOLD, **MODEL) as g:
        for start in (0, 150, 300):  # the second call crosses the threshold
            part = vectors[start : start + 150 + 50 * (start == 300)]
            g.add_vectors(part, image_bytes=b"jpeg", image_ext=".jpg",
                          metadata=[{"i": start + j} for j in range(len(part))])  # fmt: skip
            assert g.index_kind == ("exact" if start == 0 else "compressed")
        assert len(g) == 500
        _assert_same(_answers(g, queries), _exact_answers(vectors, list(range(500)), queries))


CRASH_CHILD = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from tests.service.test_gallery_compressed import fc7_like, _new
from service.gallery import Gallery
g = Gallery.open(sys.argv[1], exact_max=100, model_sha256="c" * 64, model_id="synth:1")
vectors = fc7_like(250, seed=5)
for start in (0, 90, 180):  # the second batch crosses the threshold
    ids = g.add([_new(v, i) for i, v in enumerate(vectors[start:start + 90], start=start)])
    print(g.index_kind, *ids, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit
"""


def test_acknowledged_items_survive_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "g"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(root), str(REPO)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert [line[0] for line in lines] == ["exact", "compressed", "compressed"]
    ids = [i for line in lines for i in line[1:]]
    assert len(ids) == 250
    vectors = fc7_like(250, seed=5)
    with Gallery.open(root, exact_max=100, **MODEL) as g:
        assert len(g) == 250 and g.index_kind == "compressed"
        for n in range(0, 250, 7):
            first = g.search(vectors[n], k=1)[0]
            assert first.id == ids[n] and first.distance == pytest.approx(0.0, abs=1e-3)


def test_compressed_index_reranks_with_exact_distances() -> None:
    vectors = fc7_like(2000, seed=6)
    ids = np.arange(2000, dtype=np.int64) * 3 + 1  # ids are not positions

    def fetch(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return wanted, vectors[(wanted - 1) // 3]

    compressed = CompressedIndex(DIM, fetch, vectors[::2], expected=2000, rerank=64)
    exact = ExactIndex(DIM)
    trained = compressed.memory_bytes()  # the PCA projection and the list centroids
    for index in (compressed, exact):
        index.add(vectors, ids)
    assert compressed.nlist > 1 and compressed.pca_dim == 256
    per_vector = (compressed.memory_bytes() - trained) / 2000
    assert 256 <= per_vector < 300 and exact.memory_bytes() / 2000 > 16384  # SQ8 codes + id
    queries = fc7_like(20, seed=7)
    for q in queries:
        got, want = compressed.search(q, 10), exact.search(q, 10)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [d for _, d in got] == pytest.approx([d for _, d in want], rel=1e-4)
    compressed.remove(ids[:1000])
    assert compressed.ntotal == 1000
    assert all(i >= ids[1000] for q in queries for i, _ in compressed.search(q, 10))


def test_service_uses_the_threshold_and_keeps_deletes(exported: Path, tmp_path: Path) -> None:
    """ALEXNET_GALLERY_EXACT_MAX reaches the served gallery: compressed from the start, a
    delete takes effect and survives a restart, answers equal exact search."""
    import httpx

    from core.model_loader import load_model
    from tests.service.conftest import API_KEY, running_server

    store_dir, root = exported.parent.parent, tmp_path / "gallery"
    binding = load_model(store_dir, "tiny", precision="fp32", device="cpu").gallery_binding()
    vectors = fc7_like(300, seed=8)
    with Gallery.open(root, **binding) as g:
        ids = g.add([_new(v, i) for i, v in enumerate(vectors)])
    env = {"gallery_exact_max": "100", "precision": "fp32", "api_key": API_KEY}
    auth = {"Authorization": f"Bearer {API_KEY}"}
    want = _exact_answers(vectors, list(range(1, 300)), vectors[1:2], k=5)
    for run in ("delete", "restart"):
        with running_server(store_dir, root, **env) as url:
            if run == "delete":
                assert httpx.delete(f"{url}/gallery/{ids[0]}", headers=auth).status_code == 204
            r = httpx.get(f"{url}/gallery/{ids[1]}/similar?k=5&exclude_self=false")
            got = [(n["metadata"]["i"], n["distance"]) for n in r.json()["neighbors"]]
            _assert_same([got], want)
            assert httpx.get(f"{url}/gallery/{ids[0]}").status_code == 404
    logs = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
    assert "300 item(s)" in logs and "299 item(s)" in logs and "compressed index" in logs
