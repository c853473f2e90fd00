"""Two real `alexnet serve` replicas behind a real nginx with the deployment's config
(deploy/nginx/alexnet.conf.template, through tests/nginx.py).

Each replica has its own embedded gallery folder for now; which replica answered is read from
each one's /metrics request counters. The last test SIGKILLs a replica: it runs last.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from alexnet.local_server import Server
from service.config import Settings
from tests.nginx import FAIL_TIMEOUT_S, Nginx, nginx_binary
from tests.service.conftest import SMALL_LIMITS, serve

if nginx_binary() is None:
    if os.environ.get("CI"):  # CI installs it: a missing nginx there is a failure
        raise RuntimeError("nginx is missing: .ci/run should have installed it")
    pytest.skip("Debian's nginx is not installed (apt-get install nginx)", allow_module_level=True)


@pytest.fixture(scope="module")
def replicas(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two replicas, started side by side (start-up is most of this file's run time)."""
    root = tmp_path_factory.mktemp("replicas")
    starters = []
    for i in range(2):
        (root / f"r{i}").mkdir()
        starters.append(serve(exported.parent.parent, root / f"r{i}" / "gallery", **SMALL_LIMITS))
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(2) as pool:
            started = [pool.submit(s.__enter__) for s in starters]
        for s, future in zip(starters, started, strict=True):
            if future.exception() is None:
                stack.push(s.__exit__)
        yield [future.result() for future in started]


@pytest.fixture(scope="module")
def lb(replicas: list[Server], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    upstreams = [s.url.removeprefix("http://") for s in replicas]
    with Nginx(tmp_path_factory.mktemp("nginx"), upstreams) as nginx:
        yield nginx


def predict(url: str, data: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/predict", files=[("image", ("img", data))], params={"top_k": 5},
                      headers=headers, timeout=60)  # fmt: skip


def requests_served(server: Server, method: str = "POST", endpoint: str = "/predict") -> int:
    """What the replica's alexnet_requests_total counts for `method endpoint`, all statuses."""
    text = httpx.get(f"{server.url}/metrics").text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "alexnet_requests"
            for sample in family.samples
            if sample.name == "alexnet_requests_total"
            and sample.labels["method"] == method
            and sample.labels["endpoint"] == endpoint
        )
    )


def top5(response: httpx.Response) -> list[tuple[int, float]]:
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    return [(p["index"], round(p["probability"], 5)) for p in result["predictions"]]


def test_predict_through_nginx_answers_as_each_replica_and_is_spread_over_both(
    lb: Nginx, replicas: list[Server], sample_images
) -> None:
    before = [requests_served(s) for s in replicas]
    datas = [data for _, data in sample_images[:4]]
    for data in datas:
        direct = [top5(predict(s.url, data)) for s in replicas]
        assert direct[0] == direct[1]
        for _ in range(2):  # sequential: least_conn's ties go round robin
            assert top5(predict(lb.url, data)) == direct[0]
    through_lb = [
        requests_served(s) - b - len(datas) for s, b in zip(replicas, before, strict=True)
    ]
    assert sum(through_lb) == 2 * len(datas)
    assert all(n > 0 for n in through_lb), through_lb
    # the access log names the replica of each request
    served_by = {re.search(r"upstream=(\S+)", line)[1] for line in lb.access_lines()
                 if '"POST /predict' in line}  # fmt: skip
    assert served_by == {s.url.removeprefix("http://") for s in replicas}


def test_the_request_id_goes_through_both_ways_and_nginx_makes_one_when_missing(
    lb: Nginx, replicas: list[Server]
) -> None:
    request_id = f"lb-{uuid.uuid4().hex[:12]}"
    r = httpx.get(f"{lb.url}/health/ready", headers={"X-Request-ID": request_id})
    assert r.status_code == 200 and r.headers["X-Request-ID"] == request_id
    # the replica logged it, and so did nginx
    time.sleep(0.2)
    assert sum(request_id in s.log.read_text() for s in replicas) == 1
    assert any(f"request_id={request_id} " in line for line in lb.access_lines())
    # without one, nginx's $request_id: the same id in nginx's log, the replica's and the answer
    r = httpx.get(f"{lb.url}/health/live")
    made = r.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made), made
    time.sleep(0.2)
    assert any(f"request_id={made} " in line for line in lb.access_lines())
    assert sum(made in s.log.read_text() for s in replicas) == 1


def test_nginx_lets_the_service_refuse_an_oversized_request(
    lb: Nginx, replicas: list[Server]
) -> None:
    limit = Settings(**SMALL_LIMITS).max_request_bytes
    body = os.urandom(limit + 100_000)
    files = [("image", ("big", body))]
    for _ in range(3):  # the replica answers before reading the body: no race with nginx
        r = httpx.post(f"{lb.url}/predict", files=files, timeout=60)
        assert r.status_code == 413, r.text
        # the service's JSON and its X-Request-ID, not nginx's HTML page
        assert r.json()["detail"] == f"request body larger than {limit} bytes"
        assert "X-Request-ID" in r.headers
    # without a Content-Length (chunked), the service counts the body as nginx streams it
    multipart = httpx.Request("POST", lb.url, files=files)
    content = multipart.read()
    chunked = httpx.post(
        f"{lb.url}/predict",
        content=iter([content[i : i + 2**20] for i in range(0, len(content), 2**20)]),
        headers={"Content-Type": multipart.headers["Content-Type"]},
        timeout=60,
    )
    assert chunked.status_code == 413, chunked.text
    assert chunked.json()["detail"] == f"request body larger than {limit} bytes"


class SlowUpload:
    """A POST /predict sent through nginx in two halves, on a raw socket: in between, it is in
    flight on a replica (nginx streams the body: proxy_request_buffering off)."""

    def __init__(self, url: str, data: bytes) -> None:
        boundary = uuid.uuid4().hex
        self.body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        head = (
            f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        self.half = len(self.body) // 2
        self.sock.sendall(head.encode() + self.body[: self.half])

    def finish(self) -> int:
        """Send the rest (unless nginx has answered already); the response's status."""
        self.sock.settimeout(1.0)
        try:
            first = self.sock.recv(65536)  # an early answer: the replica is gone
        except TimeoutError:
            self.sock.settimeout(30)
            self.sock.sendall(self.body[self.half :])
            first = self.sock.recv(65536)
        with self.sock:
            return int(first.split(b" ", 2)[1])


def test_a_sigkilled_replica(lb: Nginx, replicas: list[Server], sample_images) -> None:
    """What nginx guarantees when a replica dies (SIGKILL), measured:

    - a POST in flight on it is answered 502 and not sent again to the other replica (nginx
      retries a POST only if none of it was sent: a gallery add is never applied twice);
    - every later request answers 200 from the survivor, the first ones included: a refused
      connection means nothing was sent, so nginx passes even a POST to the next replica, and
      after that error the dead one is skipped for fail_timeout. When fail_timeout has passed
      nginx tries the dead one again with a live request, which again goes on to the survivor.
    """
    data = sample_images[0][1]
    dead, survivor = replicas
    survivor_before = requests_served(survivor)
    # one upload in flight on each replica: least_conn sends the second to the idle one
    uploads = [SlowUpload(lb.url, data)]
    time.sleep(0.3)
    uploads.append(SlowUpload(lb.url, data))
    time.sleep(0.3)
    os.kill(dead.process.pid, signal.SIGKILL)
    dead.process.wait(timeout=10)
    statuses = sorted(upload.finish() for upload in uploads)
    assert statuses == [200, 502]
    assert requests_served(survivor) == survivor_before + 1  # the 502 was not retried there
    assert "upstream prematurely closed connection" in lb.errors()

    def burst() -> list[int]:
        codes = []
        for _ in range(6):
            codes.append(httpx.get(f"{lb.url}/health/ready").status_code)
            codes.append(predict(lb.url, data).status_code)
        return codes

    def refused() -> int:
        return lb.error_log.read_text().count("connect() failed (111: Connection refused)")

    # the dead replica is marked failed: every request goes to the survivor
    assert burst() == [200] * 12
    # once fail_timeout has passed, nginx tries it again: refused, and passed on to the survivor
    time.sleep(FAIL_TIMEOUT_S + 0.5)
    refused_before = refused()
    assert burst() == [200] * 12
    assert refused() > refused_before
    assert requests_served(survivor) == survivor_before + 1 + 12
