"""The soak: long runs that `make test` leaves out (`make soak`, marked `soak`).

- load: 64 concurrent clients for 60 s against a real server on 127.0.0.1, with a mix of
  every endpoint; the only refusal allowed is 503 with Retry-After (queue full); p99 latency
  bounded; resident memory sampled every second and stable.
- crash: ten SIGKILLs of the server while a client thread adds gallery items.
- fuzz: a long schemathesis run against the OpenAPI schema.

Each prints a table and adds its figures to runs/soak/report.json (ALEXNET_SOAK_REPORT).
Every request goes to 127.0.0.1, and every loop is bounded in time and count.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from alexnet.local_server import Server
from tests.service.conftest import API_KEY, REPO, SMALL_LIMITS, serve
from tests.service.test_crash import crash_cycles, distinct_image
from tests.service.test_schema_fuzz import run_schemathesis

pytestmark = pytest.mark.soak

AUTH = {"Authorization": f"Bearer {API_KEY}"}
REPORT = Path(os.environ.get("ALEXNET_SOAK_REPORT", REPO / "runs" / "soak" / "report.json"))
CLIENTS = 64
SECONDS = 60.0
MAX_QUEUE = 32  # below CLIENTS, so that the queue does fill up and 503s are exercised
MAX_REQUESTS = 200_000  # a bound on the whole run, far above what 60 s can send
# (what, weight): the request mix of every client
MIX = [("predict", 50), ("predict-4", 10), ("similar", 15), ("gallery-add", 8),
       ("gallery-list", 5), ("gallery-image", 5), ("ready", 7)]  # fmt: skip


def record(section: str, figures: dict) -> None:
    """Print `figures` as a table and add them to the soak report under `section`."""
    width = max(len(k) for k in figures)
    print(f"\n{section}\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in figures.items()))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    report[section] = figures
    REPORT.write_text(json.dumps(report, indent=2) + "\n")


class RssSampler(threading.Thread):
    """Resident memory of the server every `period` seconds: [(seconds since start, MiB)]."""

    def __init__(self, server: Server, period: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.server, self.period = server, period
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stopped.wait(self.period):
            self.samples.append((time.monotonic() - start, self.server.rss_mib()))


def engine_seconds_per_image(metrics: str) -> float:
    """Inference seconds per image over the server's life, from its /metrics text."""
    value = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith(("alexnet_inference_seconds_sum", "alexnet_batch_images_sum"))
    }
    return value["alexnet_inference_seconds_sum"] / value["alexnet_batch_images_sum"]


def p99_bound(seconds_per_image: float) -> float:
    """The longest a request should wait: behind a full queue (MAX_QUEUE images) plus its own
    batch (8 images, ALEXNET_MAX_BATCH's default) at the engine's mean pace, twice over (the
    pace varies while the clients share the cores), plus 2 s for decoding and HTTP."""
    return 2.0 * (MAX_QUEUE + 8) * seconds_per_image + 2.0


async def load(url: str, images: list[bytes], seconds: float) -> list[tuple[str, object, float]]:
    """CLIENTS clients, each sending the MIX back to back for `seconds`.

    Returns:
        (what, status or exception name, seconds) of every request.
    """
    done: list[tuple[str, object, float]] = []
    ids: list[str] = []
    kinds, weights = zip(*MIX, strict=True)
    deadline = time.monotonic() + seconds

    async def client(n: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(n)
        while time.monotonic() < deadline and len(done) < MAX_REQUESTS:
            what = rng.choices(kinds, weights)[0]
            if what == "gallery-image" and not ids:
                what = "ready"
            files = [("image", (f"{i}.jpg", rng.choice(images))) for i in range(4)]
            start = time.perf_counter()
            try:
                if what in ("predict", "predict-4"):
                    n_images = 4 if what == "predict-4" else 1
                    r = await http.post("/predict", files=files[:n_images])
                elif what == "similar":
                    r = await http.post("/similar", files=files[:1], params={"k": 5})
                elif what == "gallery-add":
                    form = {"label": "soak", "metadata": json.dumps({"client": n})}
                    r = await http.post("/gallery", files=files[:1], data=form, headers=AUTH)
                    if r.status_code == 201:
                        ids.extend(item["id"] for item in r.json()["items"])
                elif what == "gallery-list":
                    r = await http.get("/gallery", params={"limit": 50})
                elif what == "gallery-image":
                    r = await http.get(f"/gallery/{rng.choice(ids)}/image")
                else:
                    r = await http.get("/health/ready")
                status: object = r.status_code
                if r.status_code == 503 and "retry-after" not in r.headers:
                    status = "503 without Retry-After"
            except httpx.HTTPError as e:
                r, status = None, type(e).__name__
            done.append((what, status, time.perf_counter() - start))
            if r is not None and r.status_code == 503 and status == 503:
                await asyncio.sleep(min(float(r.headers["retry-after"]), 2.0))  # as asked

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(n, http) for n in range(CLIENTS)))
    return done


def test_load_64_clients_for_60_seconds(exported: Path, tmp_path: Path) -> None:
    images = [distinct_image(i, seed=7) for i in range(32)]
    with serve(
        exported.parent.parent, tmp_path / "gallery", api_key=API_KEY, max_queue=str(MAX_QUEUE)
    ) as server:
        rss = RssSampler(server)
        rss.start()
        start = time.monotonic()
        done = asyncio.run(load(server.url, images, SECONDS))
        elapsed = time.monotonic() - start
        rss.stopped.set()
        rss.join()
        alive = server.process.poll() is None and httpx.get(f"{server.url}/health/live").is_success
        per_image = engine_seconds_per_image(httpx.get(f"{server.url}/metrics").text)

    statuses = Counter(status for _, status, _ in done)
    errors = {str(s): n for s, n in statuses.items() if s not in (200, 201, 503)}
    ok = np.array([t for _, s, t in done if s in (200, 201)])
    p50, p95, p99 = (float(np.percentile(ok, q)) for q in (50, 95, 99))
    model_ok = np.array([t for w, s, t in done if s == 200 and w in ("predict", "similar")])
    mib = np.array([m for _, m in rss.samples])
    warm = np.array([m for t, m in rss.samples if 10 <= t <= 20])  # after warm-up
    last = np.array([m for t, m in rss.samples if t >= elapsed - 10])
    figures = {
        "clients": CLIENTS,
        "seconds": round(elapsed, 1),
        "requests": len(done),
        "requests_per_s": round(len(done) / elapsed, 1),
        "by_kind": dict(Counter(w for w, _, _ in done)),
        "by_status": {str(s): n for s, n in sorted(statuses.items(), key=str)},
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "overloaded_503_with_retry_after": statuses[503],
        "latency_ok_s": {"p50": round(p50, 3), "p95": round(p95, 3), "p99": round(p99, 3)},
        "latency_predict_similar_p99_s": round(float(np.percentile(model_ok, 99)), 3),
        "engine_s_per_image": round(per_image, 3),
        "p99_bound_s": round(p99_bound(per_image), 1),
        "rss_mib": {
            "first": round(float(mib[0])),
            "after_warmup": round(float(warm.mean())),
            "max": round(float(mib.max())),
            "last_10s": round(float(last.mean())),
        },  # fmt: skip
        "rss_samples": len(mib),
        "server_alive_after": alive,
        "max_queue": MAX_QUEUE,
    }
    record("load", figures)
    assert alive
    assert errors == {}, errors
    served = {w for w, s, _ in done if s in (200, 201)}
    assert served == {w for w, _ in MIX}, f"some kinds of request were never served: {served}"
    assert p99 < p99_bound(per_image), figures
    assert last.mean() - warm.mean() < 64, figures["rss_mib"]


def test_crash_ten_sigkills(exported: Path, tmp_path: Path) -> None:
    report = crash_cycles(exported.parent.parent, tmp_path / "gallery", cycles=10, seed=1)
    record(
        "crash",
        {
            "sigkills": report.cycles,
            "posts": report.posts,
            "acknowledged_201": len(report.acknowledged),
            "posts_cut_off_by_the_kill": report.in_flight_at_kill,
            "of_those_committed_and_kept": report.in_flight_kept,
            "found_by_similar_at_distance_0": report.checked_similar,
            "items_lost": len(report.lost),
        },
    )
    assert report.lost == set()
    assert report.checked_similar == len(report.acknowledged) >= 60


def test_schemathesis_long_run(exported: Path, tmp_path: Path) -> None:
    examples = int(os.environ.get("ALEXNET_FUZZ_EXAMPLES", "300"))
    with serve(
        exported.parent.parent,
        tmp_path / "gallery",
        api_key=API_KEY,
        **SMALL_LIMITS,
    ) as server:
        result = run_schemathesis(server.url, tmp_path, examples, seed=1)
        alive = server.process.poll() is None
    record(
        "fuzz",
        {
            "max_examples": examples,
            "operations_tested": result["operations"]["tested"],
            "test_cases": result["test_cases"]["generated"],
            "failures": len(result["failures"]),
            "errors": len(result["errors"]),
            "seconds": round(result["running_time"], 1),
        },
    )
    assert alive
    assert result["exit_code"] == 0, result["output"][-8000:]
