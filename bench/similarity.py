"""`/similar` at gallery sizes beyond what images can fill: fc7-like vectors synthesised
around real fc7 vectors, added with `Gallery.add_vectors`, searched through a real server;
recall@10 against exact search computed here, chunk by chunk.

Synthesis: the real fc7 vectors of N images (the bench model on the synthetic image set)
give a mean, a principal basis (all N-1 components) and each vector's place. Vector j of
a gallery is `relu(real[c] + 0.5 * z @ B + e)`: a random real vector c, plus a Gaussian
move with the real vectors' own covariance (z ~ N(0, I) over the principal basis B, each
component scaled by its standard deviation), plus isotropic noise e in all 4096 dims with
a quarter of the real vectors' per-dimension spread. Chunk i is drawn from its own seeded
generator, so any chunk can be made again without storing 16 GB of vectors.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import numpy as np

from alexnet.local_server import serve
from service.gallery import open_gallery

CHUNK = 8192  # vectors per `add_vectors` call (one transaction, one shared image file)
IMAGE = b"\xff\xd8 bench"


class Synthesiser:
    """fc7-like vectors around `real` (n, d): see the module docstring."""

    def __init__(self, real: np.ndarray, seed: int = 0) -> None:
        real = np.asarray(real, dtype=np.float32)
        self.real, self.seed, self.dim = real, seed, real.shape[1]
        centred = real - real.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        self.basis = (s[:, None] / np.sqrt(len(real) - 1) * vt).astype(np.float32)
        self.iso = 0.25 * float(np.sqrt((centred**2).mean()))

    def chunk(self, index: int, size: int = CHUNK) -> np.ndarray:
        """Vectors index*size ... index*size+size-1, float32 (size, dim)."""
        rng = np.random.default_rng((self.seed, index))
        base = self.real[rng.integers(0, len(self.real), size)]
        z = rng.standard_normal((size, len(self.basis)), dtype=np.float32)
        e = rng.standard_normal((size, self.dim), dtype=np.float32) * self.iso
        return np.maximum(base + 0.5 * (z @ self.basis) + e, 0)


def fill(
    root: Path | str, binding: dict, synth: Synthesiser, n: int, queries: int, k: int = 10
) -> dict:
    """Add `n` synthesised vectors to a new gallery at `root` (a folder or a database URL)
    and compute the exact top-k (self excluded) of the first `queries` of them; returns the
    ground truth.

    `add_vectors`, one call per chunk: the rows of a chunk share one tiny image (the search
    never reads images), committed with the gallery's own durability.
    """
    q = synth.chunk(0)[:queries].astype(np.float32)
    best_d = np.full((queries, k + 1), np.inf, dtype=np.float32)
    best_i = np.full((queries, k + 1), -1, dtype=np.int64)
    ids: list[str] = []
    start = time.perf_counter()
    with open_gallery(root, **binding) as g:
        assert len(g) == 0, f"{root} is not empty"
        for c in range((n + CHUNK - 1) // CHUNK):
            x, first = synth.chunk(c)[: n - c * CHUNK], c * CHUNK
            metadata = [{"i": first + j} for j in range(len(x))]
            chunk_ids = g.add_vectors(x, image_bytes=IMAGE, image_ext=".jpg", metadata=metadata)
            ids.extend(chunk_ids[: max(queries - first, 0)])
            best_d, best_i = _merge_nearest(q, x, first, best_d, best_i)
    truth = [[int(i) for i in row if i != qi][:k] for qi, row in enumerate(best_i)]
    return {"ids": ids, "truth": truth, "fill_s": time.perf_counter() - start}


def _merge_nearest(
    q: np.ndarray, x: np.ndarray, first: int, best_d: np.ndarray, best_i: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest so far (squared distances, item numbers) of each query, with the vectors
    `x` (item numbers from `first` on) taken into account."""
    d = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * (q @ x.T)
    all_d = np.concatenate([best_d, d], axis=1)
    all_i = np.concatenate([best_i, np.broadcast_to(np.arange(first, first + len(x)), d.shape)],
                           axis=1)  # fmt: skip
    top = np.argsort(all_d, axis=1, kind="stable")[:, : best_d.shape[1]]
    return np.take_along_axis(all_d, top, 1), np.take_along_axis(all_i, top, 1)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(url: str, truth: dict, k: int = 10, warmup: int = 20) -> dict:
    """GET /gallery/{id}/similar for each query item: latency and recall@k."""
    latencies, recalls = [], []
    with httpx.Client(base_url=url, timeout=600) as client:
        for item_id in truth["ids"][:warmup]:
            client.get(f"/gallery/{item_id}/similar", params={"k": k})
        for item_id, want in zip(truth["ids"], truth["truth"], strict=True):
            t = time.perf_counter()
            r = client.get(f"/gallery/{item_id}/similar", params={"k": k})
            latencies.append(time.perf_counter() - t)
            r.raise_for_status()
            got = [n["metadata"]["i"] for n in r.json()["neighbors"]]
            recalls.append(len(set(got) & set(want)) / k)
    ms = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "recall_at_10": float(np.mean(recalls)),
            "queries": len(recalls)}  # fmt: skip


def restart(
    store: Path, root: Path | str, truth: dict, port: int, log: Path, env: dict,
    jpegs: list[bytes],
) -> dict:  # fmt: skip
    """Start the server again on the gallery a first one left at its graceful stop: how
    soon it is ready (a folder's index read back from gallery.faiss, not rebuilt) and
    whether it answers as well; then the ingest rate through the API (last: the photos it
    adds would be neighbours of the queries)."""
    start = time.perf_counter()
    with serve(store, root, port=port, log=log, timeout=1800, **env) as server:
        ready_s = time.perf_counter() - start
        again = measure(server.url, truth)
        ingested = ingest(server.url, jpegs)
    return {"restart_ready_s": ready_s, "restart_p50_ms": again["p50_ms"],
            "restart_recall_at_10": again["recall_at_10"], **ingested}  # fmt: skip


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def ingest(url: str, jpegs: list[bytes], clients: int = 4, requests: int = 40) -> dict:
    """POST /gallery through the API (decode, the model, the gallery's commit): items/s."""
    from bench.throughput import load

    row = load(url, "/gallery", jpegs, clients, requests, ok=201)
    return {"ingest_items_per_s": row["images_per_s"], "ingest_p50_ms": row["p50_ms"],
            "ingest_errors": row["errors"]}  # fmt: skip
