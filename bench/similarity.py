"""`/similar` at gallery sizes beyond what images can fill: fc7-like vectors synthesised
around real fc7 vectors, written straight into a gallery's SQLite table, searched through a
real server; recall@10 against exact search computed here, chunk by chunk.

Synthesis: the real fc7 vectors of N images (the bench model on the synthetic image set)
give a mean, a principal basis (all N-1 components) and each vector's place. Vector j of
a gallery is `relu(real[c] + 0.5 * z @ B + e)`: a random real vector c, plus a Gaussian
move with the real vectors' own covariance (z ~ N(0, I) over the principal basis B, each
component scaled by its standard deviation), plus isotropic noise e in all 4096 dims with
a quarter of the real vectors' per-dimension spread. Chunk i is drawn from its own seeded
generator, so any chunk can be made again without storing 16 GB of vectors.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

from core.constants import GALLERY_DB_FILE, GALLERY_IMAGES_DIR
from core.store import now_iso
from service.gallery import Gallery

CHUNK = 8192


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


def fill(root: Path, binding: dict, synth: Synthesiser, n: int, queries: int, k: int = 10) -> dict:
    """Write `n` items into a new gallery at `root` (rows only, one shared image file) and
    the exact top-k (self excluded) of the first `queries` items; returns the ground truth."""
    with Gallery.open(root, exact_max=n, **binding) as g:  # creates the schema, binds the model
        assert len(g) == 0, f"{root} is not empty"
    image_file = "0" * 32 + ".jpg"
    image = b"\xff\xd8 bench"  # rows only: the search never reads images
    (root / GALLERY_IMAGES_DIR / image_file).write_bytes(image)
    sha = hashlib.sha256(image).hexdigest()
    db = sqlite3.connect(root / GALLERY_DB_FILE, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")  # the bench can redo a crashed fill
    q = synth.chunk(0)[:queries].astype(np.float32)
    best_d = np.full((queries, k + 1), np.inf, dtype=np.float32)
    best_i = np.full((queries, k + 1), -1, dtype=np.int64)
    ids: list[str] = []
    start = time.perf_counter()
    for c in range((n + CHUNK - 1) // CHUNK):
        x = synth.chunk(c)[: n - c * CHUNK]
        first = c * CHUNK
        chunk_ids = [uuid.uuid4().hex for _ in range(len(x))]
        if first < queries:
            ids.extend(chunk_ids[: queries - first])
        created = now_iso()
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO items (id, label, metadata, created_at, image_file, image_sha256, "
            "vector) VALUES (?, NULL, ?, ?, ?, ?, ?)",
            ((chunk_ids[j], json.dumps({"i": first + j}), created, image_file, sha,
              x[j].astype("<f4").tobytes()) for j in range(len(x))),
        )  # fmt: skip
        db.execute("COMMIT")
        d = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * (q @ x.T)
        all_d = np.concatenate([best_d, d], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(np.arange(first, first + len(x)),
                                                        d.shape)], axis=1)  # fmt: skip
        top = np.argsort(all_d, axis=1, kind="stable")[:, : k + 1]
        best_d, best_i = np.take_along_axis(all_d, top, 1), np.take_along_axis(all_i, top, 1)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    truth = [[int(i) for i in row if i != qi][:k] for qi, row in enumerate(best_i)]
    return {"ids": ids, "truth": truth, "fill_s": time.perf_counter() - start}


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


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
