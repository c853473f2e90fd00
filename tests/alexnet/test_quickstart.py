"""`alexnet quickstart` (`make run`): build the default once, reuse it, serve it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core import store
from service import gallery
from tests.service.conftest import REPO, running_server

SMALL = ["--classes", "3", "--per-class", "8", "--epochs", "1", "--batch-size", "6"]


def quickstart_argv(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "alexnet", "quickstart", "--store", str(root / "store"),
            "--gallery", str(root / "gallery"), "--data-dir", str(root / "data"),
            "--run-dir", str(root / "run"), "--no-progress", *SMALL, *extra]  # fmt: skip


def quickstart(root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALEXNET_THREADS": "2"}
    return subprocess.run(quickstart_argv(root, *extra), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quickstart")
    done = quickstart(root, "--build-only")
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_builds_every_step_from_nothing(built: Path) -> None:
    assert store.list_names(built / "store") == ["default"]
    manifest = store.read_manifest(built / "store" / "default" / "1")
    val_images = sorted((built / "data" / "val").rglob("*.*"))
    assert manifest.labels == sorted(p.name for p in (built / "data" / "train").iterdir())
    assert "ten_crop" in manifest.metrics  # evaluated on the generated validation set
    assert manifest.source["epoch"] == 0  # one epoch, as asked
    binding = gallery.stored_model(built / "gallery")
    assert binding is not None and binding.model_sha256 == manifest.sha256
    g = gallery.Gallery.open(built / "gallery", model_sha256=manifest.sha256, model_id="default:1")
    with g:
        items, total = g.list(offset=0, limit=100)
        assert len(g) == total == len(val_images)
        assert sorted(i.label for i in items) == sorted(p.parent.name for p in val_images)


def test_a_second_run_reuses_everything(built: Path) -> None:
    checkpoint = built / "run" / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    done = quickstart(built, "--build-only")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reusing" in done.stderr or "serving from" in done.stderr
    assert checkpoint.stat().st_mtime_ns == before
    assert store.versions(built / "store", "default") == [1]


def test_an_interrupted_build_continues_where_it_stopped(built: Path, tmp_path: Path) -> None:
    # as if the build had stopped after training: data and run exist, no model, no gallery
    for part in ("data", "run"):
        shutil.copytree(built / part, tmp_path / part)
    before = (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns
    done = quickstart(tmp_path, "--build-only")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reusing" in done.stderr
    assert (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns == before  # not retrained
    assert store.versions(tmp_path / "store", "default") == [1]
    assert gallery.stored_model(tmp_path / "gallery") is not None


def test_serves_the_default(built: Path) -> None:
    # the server's port comes from ALEXNET_PORT, set by running_server like the other settings
    with running_server(
        built / "store", built / "gallery", command=quickstart_argv(built), cwd=REPO
    ) as url:
        query = next((built / "data" / "val").rglob("*.*"))
        r = httpx.post(f"{url}/similar", files=[("image", ("q", query.read_bytes()))], timeout=60)
        assert r.status_code == 200, r.text
        nearest = r.json()["neighbors"][0]
        assert nearest["distance"] < 1e-3 and nearest["label"] == query.parent.name
        assert json.loads(httpx.get(f"{url}/models").text)["loaded"]["id"] == "default:1"
        assert "<title>" in httpx.get(url + "/").text
