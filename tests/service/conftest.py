"""A real `alexnet serve` process on a loopback port, with a model exported in this session."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

API_KEY = "test-key-123"
# Small limits, so that crossing them is cheap (ALEXNET_* settings of the test servers).
SMALL_LIMITS = {"max_image_bytes": "2000000", "max_image_pixels": "4000000",
                "max_images_per_request": "4"}  # fmt: skip
REPO = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `alexnet serve`."""

    url: str
    process: subprocess.Popen
    log: Path

    def rss_mib(self) -> float:
        """Resident memory of the server process, MiB (Linux: /proc/PID/status)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for process {self.process.pid}")


@contextlib.contextmanager
def serve(
    store: Path,
    gallery: Path,
    wait_ready: bool = True,
    port: int | None = None,
    command: list[str] | None = None,
    cwd: Path = REPO,
    **env: str,
) -> Iterator[Server]:
    """Start `alexnet serve` (or `command`) on a loopback port (a free one by default).

    Settings go in as ALEXNET_* variables: `max_queue="8"` is ALEXNET_MAX_QUEUE=8.
    """
    port = port or free_port()
    environ = {
        **os.environ,
        "ALEXNET_STORE": str(store),
        "ALEXNET_GALLERY": str(gallery),
        "ALEXNET_PORT": str(port),
        "ALEXNET_HOST": "127.0.0.1",
        "ALEXNET_THREADS": "2",
        **{f"ALEXNET_{k.upper()}": v for k, v in env.items()},
    }
    log_path = gallery.parent / f"server-{port}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - closed below; appended to across restarts
    proc = subprocess.Popen(
        command or [sys.executable, "-m", "alexnet", "serve"],
        env=environ,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        path = "/health/ready" if wait_ready else "/health/live"
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(url + path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        yield Server(url, proc, log_path)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@contextlib.contextmanager
def running_server(
    store: Path,
    gallery: Path,
    wait_ready: bool = True,
    command: list[str] | None = None,
    cwd: Path = REPO,
    **env: str,
) -> Iterator[str]:
    """`serve`, yielding only the base URL."""
    with serve(store, gallery, wait_ready, command=command, cwd=cwd, **env) as server:
        yield server.url


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def sample_images(synth_root: Path) -> list[tuple[str, bytes]]:
    """(class name, file bytes) of the validation images, one JPEG or PNG file each."""
    return [(p.parent.name, p.read_bytes()) for p in sorted((synth_root / "val").rglob("*.*"))]


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with an API key, SMALL_LIMITS and an empty gallery."""
    gallery = tmp_path_factory.mktemp("server") / "gallery"
    with running_server(exported.parent.parent, gallery, api_key=API_KEY, **SMALL_LIMITS) as url:
        yield url


def settled_readiness(url: str, timeout: float = 60) -> httpx.Response:
    """/health/ready once loading has finished, successfully or not."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{url}/health/ready")
        settled = r.status_code == 200 or "loading" not in r.json()["detail"]
        if settled or time.monotonic() > deadline:
            return r
        time.sleep(0.2)
