"""A real `alexnet serve` process on a loopback port, with a model exported in this session."""

from __future__ import annotations

import contextlib
import functools
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from alexnet import local_server

API_KEY = "test-key-123"
# Small limits, so that crossing them is cheap (ALEXNET_* settings of the test servers).
SMALL_LIMITS = {"max_image_bytes": "2000000", "max_image_pixels": "4000000",
                "max_images_per_request": "4"}  # fmt: skip
REPO = Path(__file__).parents[2]


# the tests' servers: two onnxruntime threads (the machine's cores), started in the repository
serve = functools.partial(local_server.serve, cwd=REPO, threads="2")


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
    with serve(store, gallery, wait_ready=wait_ready, command=command, cwd=cwd, **env) as server:
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
