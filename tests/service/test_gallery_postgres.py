"""The PostgreSQL gallery's own behaviour, on the session's real PostgreSQL 18 + pgvector:
replicas sharing one database, migrations raced, an outage, the HNSW search above
`exact_max`, the projection made while others insert, bulk and copying writes.

What both backends do alike is tested in test_gallery.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import pytest

from service.gallery import (
    GalleryModelMismatchError,
    GalleryUnavailableError,
    ItemRecord,
    NewItem,
    open_gallery,
    pg_rows,
    stored_model,
)
from service.gallery.pg_gallery import PgGallery
from service.gallery.pg_schema import MIGRATIONS

DIM = 4096
MODEL_A = {"model_sha256": "a" * 64, "model_id": "synth:1"}
MODEL_B = {"model_sha256": "b" * 64, "model_id": "synth:2"}
THRESHOLD = 200


def fc7_like(n: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Non-negative, sparse, clustered 4096-d float32 vectors with a few directions of
    variation (what fc7 vectors of images of a few classes look like)."""
    rng = np.random.default_rng(seed)
    centres = rng.random((clusters, DIM), dtype=np.float32) * (rng.random(DIM) < 0.3)
    basis = rng.standard_normal((8, DIM)).astype(np.float32)
    spread = rng.standard_normal((n, 8)).astype(np.float32) @ basis * 0.2
    noise = rng.standard_normal((n, DIM)).astype(np.float32) * 0.05
    return np.maximum(centres[rng.integers(0, clusters, n)] + spread + noise, 0)


def _new(vector: np.ndarray, i: int = 0) -> NewItem:
    return NewItem(b"jpeg %d" % i, ".jpg", vector, label=f"c{i % 3}", metadata={"i": i})


def _sql(url: str, query: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


@pytest.fixture
def opened(pg_url: str) -> Iterator[Callable[..., PgGallery]]:
    """Opens PgGalleries on the test's database (MODEL_A unless told), closed after it."""
    galleries: list[PgGallery] = []

    def open_(model: dict = MODEL_A, **kw: object) -> PgGallery:
        g = open_gallery(pg_url, **model, **kw)
        assert isinstance(g, PgGallery)
        galleries.append(g)
        return g

    yield open_
    for g in galleries:
        g.close()


def test_replicas_see_each_others_writes_at_once(opened, pg_url: str) -> None:
    a, b = opened(), opened()
    vectors = fc7_like(6, seed=1)
    ids = a.add([_new(v, i) for i, v in enumerate(vectors)])
    assert len(b) == 6 and [i.id for i in b.list()[0]] == ids
    assert b.get(ids[2]).metadata == {"i": 2} and b.image(ids[2]).data == b"jpeg 2"
    assert b.search(vectors[4], k=1)[0].id == ids[4]
    assert b.remove(ids[4]) and a.get(ids[4]) is None and len(a) == 5
    assert ids[4] not in [n.id for n in a.search(vectors[4], k=10)]
    bulk = b.add_vectors(fc7_like(3, seed=2), image_bytes=b"shared", image_ext=".jpg")
    assert a.known_ids([*bulk, "f" * 32]) == set(bulk) and len(a) == 8
    assert a.location == b.location == pg_url and a.index_kind == "exact"


def test_concurrent_opens_of_a_fresh_database_migrate_once(pg_url: str) -> None:
    barrier, opened, errors = threading.Barrier(6), [], []

    def open_one() -> None:
        try:
            barrier.wait()
            opened.append(open_gallery(pg_url, **MODEL_A))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(opened) == 6
        rows = _sql(pg_url, "SELECT version FROM schema_migrations ORDER BY version")
        assert rows == [(v,) for v, _, _ in MIGRATIONS]
        assert _sql(pg_url, "SELECT count(*) FROM gallery_meta") == [(1,)]
        [item_id] = opened[0].add([_new(fc7_like(1)[0])])
        assert all(g.get(item_id) is not None for g in opened)
    finally:
        for g in opened:
            g.close()


def test_model_binding_refused_at_open_and_after_a_reindex(opened, pg_url: str) -> None:
    a = opened()
    vectors = fc7_like(3)
    ids = a.add([_new(v, i) for i, v in enumerate(vectors)])
    with pytest.raises(GalleryModelMismatchError, match="alexnet reindex"):
        opened(MODEL_B)
    # Another replica re-embeds with model B: this one may no longer write or search.
    b = opened()
    b.replace_vectors(dict(zip(ids, fc7_like(3, seed=9), strict=True)), **MODEL_B)
    assert stored_model(pg_url).model_id == "synth:2"
    with pytest.raises(GalleryModelMismatchError, match="synth:2"):
        a.add([_new(vectors[0])])
    with pytest.raises(GalleryModelMismatchError):
        a.search(vectors[0], k=1)
    assert b.search(fc7_like(3, seed=9)[1], k=1)[0].id == ids[1] and len(b) == 3


def _with_password(url: str, password: str) -> str:
    """The URL with a password (the test server trusts any)."""
    parts = urlsplit(url)
    netloc = parts.netloc.replace("@", f":{password}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _raises_quickly(call: Callable[[], object], secret: str) -> str:
    started = time.monotonic()
    with pytest.raises(GalleryUnavailableError) as err:
        call()
    assert time.monotonic() - started < 5, "an unreachable database must not hang a call"
    assert secret not in str(err.value)
    return str(err.value)


def test_outage_raises_unavailable_then_recovers(postgres, pg_url: str) -> None:
    secret = "s3cret-pw"
    url = _with_password(pg_url, secret)
    g = open_gallery(url, **MODEL_A)
    try:
        assert g.location == pg_url.replace("@", ":***@", 1) and g.problem() is None
        vectors = fc7_like(4)
        ids = g.add([_new(v, i) for i, v in enumerate(vectors[:3])])
        postgres.stop()
        try:
            message = _raises_quickly(lambda: g.add([_new(vectors[3], 3)]), secret)
            assert "unreachable" in message and "***" in message
            _raises_quickly(lambda: g.search(vectors[0], k=1), secret)
            _raises_quickly(lambda: g.get(ids[0]), secret)
            _raises_quickly(lambda: len(g), secret)
            _raises_quickly(lambda: g.list(), secret)
            _raises_quickly(lambda: open_gallery(url, **MODEL_A), secret)
            _raises_quickly(lambda: stored_model(url), secret)
            started = time.monotonic()
            problem = g.problem()
            assert problem and secret not in problem and time.monotonic() - started < 5
        finally:
            postgres.start()
        deadline = time.monotonic() + 15
        while g.problem() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert g.problem() is None
        # The same object again, nothing acknowledged lost.
        assert len(g) == 3 and [i.id for i in g.list()[0]] == ids
        [last] = g.add([_new(vectors[3], 3)])
        assert g.search(vectors[3], k=1)[0].id == last and len(g) == 4
    finally:
        g.close()


def _recall_and_distances(g: PgGallery, vectors: np.ndarray, ids: list[str], queries) -> float:
    """recall@10 of `g` against exact float64 ground truth; asserts exact distances."""
    hits = 0
    for q in queries:
        d = np.sqrt(((vectors.astype(np.float64) - q.astype(np.float64)) ** 2).sum(1))
        truth = {ids[j] for j in np.argsort(d, kind="stable")[:10]}
        found = g.search(q, k=10)
        assert len(found) == 10
        assert [n.distance for n in found] == sorted(n.distance for n in found)
        by_id = dict(zip(ids, d, strict=True))
        np.testing.assert_allclose([n.distance for n in found], [by_id[n.id] for n in found],
                                   rtol=1e-4)  # fmt: skip
        hits += len(truth & {n.id for n in found})
    return hits / (10 * len(queries))


def test_search_above_exact_max_uses_hnsw_with_exact_distances(opened, pg_url: str) -> None:
    vectors = fc7_like(400, seed=3)
    a = opened(exact_max=THRESHOLD)
    ids = a.add_vectors(vectors[:150], image_bytes=b"x", image_ext=".jpg")
    assert a.index_kind == "exact"
    assert _sql(pg_url, "SELECT count(*) FROM gallery_projection") == [(0,)]
    ids += a.add([_new(v, i) for i, v in enumerate(vectors[150:])])
    assert a.index_kind == "hnsw"
    with psycopg.connect(pg_url, autocommit=True) as conn:  # (a few hundred rows: seq scan)
        conn.execute("SET enable_seqscan = off")
        zero = "[" + ",".join(["0"] * 256) + "]"
        plan = conn.execute(
            f"EXPLAIN SELECT id FROM gallery_items ORDER BY reduced <-> '{zero}' LIMIT 5"
        ).fetchall()
    assert "gallery_items_reduced_hnsw" in " ".join(r[0] for r in plan)
    queries = np.concatenate([vectors[:20] + 0.03, fc7_like(20, seed=4)])
    b = opened(exact_max=THRESHOLD)  # another replica: the same projection, the same answers
    assert _recall_and_distances(a, vectors, ids, queries) >= 0.95
    assert [n.id for n in b.search(queries[0], k=10)] == [n.id for n in a.search(queries[0], 10)]
    by_id = b.search_by_id(ids[7], k=5, exclude_self=True)
    assert by_id is not None and ids[7] not in [n.id for n in by_id] and len(by_id) == 5
    assert a.search_by_id(ids[7], k=1)[0].distance == pytest.approx(0.0, abs=1e-3)


def test_projection_made_while_replicas_insert_leaves_no_row_without_it(
    opened, pg_url: str
) -> None:
    vectors = fc7_like(260, seed=5)
    first = opened(exact_max=100)
    first.add_vectors(vectors[:90], image_bytes=b"x", image_ext=".jpg")
    replicas = [opened(exact_max=100) for _ in range(4)]
    errors: list[BaseException] = []

    def insert(g: PgGallery, part: np.ndarray) -> None:
        try:
            for start in range(0, len(part), 5):
                g.add([_new(v) for v in part[start : start + 5]])
        except BaseException as e:  # surfaced below
            errors.append(e)

    parts = np.array_split(vectors[90:], len(replicas))
    threads = [threading.Thread(target=insert, args=gp) for gp in zip(replicas, parts, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _sql(pg_url, "SELECT count(*) FROM gallery_projection") == [(1,)]
    assert _sql(pg_url, "SELECT count(*), count(reduced) FROM gallery_items") == [(260, 260)]
    assert all(len(g) == 260 and g.index_kind == "hnsw" for g in replicas)


def test_add_vectors_stores_the_shared_image_once(opened, pg_url: str) -> None:
    g = opened()
    first = g.add_vectors(fc7_like(30, seed=6), image_bytes=b"shared 1", image_ext=".JPG",
                          labels=["bulk"] * 30, metadata=[{"j": j} for j in range(30)])  # fmt: skip
    second = g.add_vectors(fc7_like(5, seed=7), image_bytes=b"shared 2", image_ext=".png")
    assert _sql(pg_url, "SELECT count(*) FROM gallery_images") == [(2,)]
    item = g.get(first[4])
    assert (item.label, item.metadata, item.image_ext) == ("bulk", {"j": 4}, ".jpg")
    assert dict(g.iter_images())[second[2]] == b"shared 2" and len(g) == 35
    for item_id in second:
        g.remove(item_id)
    assert _sql(pg_url, "SELECT count(*) FROM gallery_images") == [(1,)]
    assert _sql(pg_url, "SELECT item_count FROM gallery_meta") == [(30,)]


def test_import_records_keeps_ids_and_refuses_duplicates(opened, monkeypatch) -> None:
    g = opened()
    vectors = fc7_like(30, seed=8)
    records = [
        ItemRecord(id=f"{i:032x}", label=None if i % 2 else "x", metadata={"i": i},
                   created_at=f"2020-01-{1 + i % 28:02d}T00:00:00+00:00",
                   image_bytes=b"img %d" % (i % 4), image_ext=".webp", vector=vectors[i])
        for i in range(30)
    ]  # fmt: skip
    g.import_records(records[:20])
    with pytest.raises(ValueError, match="already stored"):
        g.import_records(records[15:])  # 5 known ids: nothing of it is written
    assert len(g) == 20 and g.known_ids([r.id for r in records]) == {r.id for r in records[:20]}
    g.import_records(records[20:])
    monkeypatch.setattr(pg_rows, "READ_CHUNK", 7)  # keyset pages across several chunks
    back = list(g.iter_records())
    assert [r.id for r in back] == [r.id for r in records]
    for got, want in zip(back, records, strict=True):
        assert (got.created_at, got.label, got.metadata) == (want.created_at, want.label,
                                                             want.metadata)  # fmt: skip
        assert (got.image_bytes, got.image_ext) == (want.image_bytes, want.image_ext)
        np.testing.assert_array_equal(got.vector, want.vector)
    assert [i for i, _ in g.iter_images()] == [r.id for r in records]


def test_replace_vectors_refits_the_projection(opened, pg_url: str) -> None:
    g = opened(exact_max=50)
    ids = g.add_vectors(fc7_like(80, seed=10), image_bytes=b"x", image_ext=".jpg")
    [(before,)] = _sql(pg_url, "SELECT projection_id FROM gallery_projection")
    new = fc7_like(80, seed=11, clusters=7)
    with pytest.raises(ValueError, match="missing"):
        g.replace_vectors(dict(zip(ids[1:], new[1:], strict=True)), **MODEL_B)
    assert g.model_id == "synth:1" and stored_model(pg_url).model_id == "synth:1"
    g.replace_vectors(dict(zip(ids, new, strict=True)), **MODEL_B)
    [(after, sha)] = _sql(pg_url, "SELECT projection_id, model_sha256 FROM gallery_projection")
    assert after != before and sha == "b" * 64 and g.model_id == "synth:2"
    assert _sql(pg_url, "SELECT count(reduced) FROM gallery_items") == [(80,)]
    hit = g.search(new[33], k=1)[0]
    assert hit.id == ids[33] and hit.distance == pytest.approx(0.0, abs=1e-3)
    assert g.index_kind == "hnsw"
