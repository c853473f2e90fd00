"""The serve image's Python environment, rebuilt here: a clean virtual environment with only
requirements/serve.txt and the project (--no-deps), as the Dockerfile's serve stage installs
it. No torch in it, and `alexnet serve` answers /health/ready and /predict from it.

It installs ~25 packages (onnxruntime-gpu, faiss-cpu, fastapi, ...) from the package
registry or pip's cache: about 20-60 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alexnet.local_server import free_port
from tests.service.conftest import running_server

REPO = Path(__file__).parents[2]
# the Dockerfile's COPY lines: the core, the service and the command line; no training
COPIED = ("pyproject.toml", "README.md", "core", "service", "alexnet")


def clean_env() -> dict[str, str]:
    """This process's environment without what would let the venv see this checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run(*argv: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv holding the serve dependency set and the project; its bin folder."""
    root = tmp_path_factory.mktemp("serve-image")
    src = root / "src"
    src.mkdir()
    for name in COPIED:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, src / name)
    venv = root / "venv"
    bin_dir = venv / "bin"
    steps = [
        (sys.executable, "-m", "venv", venv),
        (bin_dir / "pip", "install", "--quiet", "-r", REPO / "requirements" / "serve.txt"),
        (bin_dir / "pip", "install", "--quiet", "--no-deps", src),
    ]
    for step in steps:
        result = run(*step, cwd=root)
        assert result.returncode == 0, f"{step}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    yield bin_dir


def test_the_serve_environment_has_no_torch(serve_venv: Path, tmp_path: Path) -> None:
    probe = run(serve_venv / "python", "-c", "import torch", cwd=tmp_path)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    # the service's modules and the CLI import without torch, from the installed copy
    code = (
        "import sys, core.imaging, core.model_loader, service, service.app, service.indexing, "
        "service.healthcheck, alexnet.main, alexnet.serve, alexnet.index, alexnet.reindex, "
        "alexnet.models, alexnet.predict, alexnet.predicting.local, alexnet.predicting.remote\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print(service.__file__)"
    )
    probe = run(serve_venv / "python", "-c", code, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert str(serve_venv.parent) in probe.stdout, "imported the checkout, not the installed copy"
    # only the core, the service and the command line are installed: no training package
    probe = run(serve_venv / "python", "-c", "import training", cwd=tmp_path)
    assert probe.returncode != 0 and "No module named 'training'" in probe.stderr
    # and a training command says what it needs instead of a traceback
    probe = run(serve_venv / "alexnet", "train", "--help", cwd=tmp_path)
    assert probe.returncode != 0 and "needs the training packages" in probe.stderr


def test_alexnet_serves_from_the_serve_environment(
    serve_venv: Path,
    exported: Path,
    synth_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the server must use the venv's copy
    store_dir = exported.parent.parent
    models = run(serve_venv / "alexnet", "models", "--store", store_dir, cwd=tmp_path)
    assert models.returncode == 0 and "tiny" in models.stdout, models.stderr

    image = sorted((synth_root / "val").rglob("*.*"))[0]
    command = [str(serve_venv / "alexnet"), "serve"]
    with running_server(store_dir, tmp_path / "gallery", command=command, cwd=tmp_path) as url:
        assert httpx.get(f"{url}/health/ready").status_code == 200
        r = httpx.post(f"{url}/predict", files={"image": (image.name, image.read_bytes())})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "tiny:1"
        (result,) = body["results"]
        assert result["predictions"][0]["label"] in {p.name for p in (synth_root / "val").iterdir()}
        # the web page and its script are packaged with the service
        assert "<title>" in httpx.get(f"{url}/").text
        assert httpx.get(f"{url}/static/app.js").status_code == 200
        # and so are /docs's scripts (fastapi-offline, pinned in requirements/serve.txt)
        assert "/docs-assets/swagger-ui-bundle.js" in httpx.get(f"{url}/docs").text
        assert httpx.get(f"{url}/docs-assets/swagger-ui-bundle.js").status_code == 200
        # the container's health check, from the same environment
        port = url.rsplit(":", 1)[1]
        check = subprocess.run([serve_venv / "python", "-m", "service.healthcheck"],
                               env={**clean_env(), "ALEXNET_PORT": port}, capture_output=True,
                               text=True, cwd=tmp_path, timeout=30)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr

    closed = subprocess.run([serve_venv / "python", "-m", "service.healthcheck"],
                            env={**clean_env(), "ALEXNET_PORT": str(free_port())},
                            capture_output=True, text=True, cwd=tmp_path, timeout=30)  # fmt: skip
    assert closed.returncode == 1 and "/health/ready" in closed.stdout
