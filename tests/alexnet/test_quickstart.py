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
import torch

from core import store
from core.durable import write_json_atomic
from service import gallery
from tests.service.conftest import REPO, running_server

SMALL = ["--classes", "3", "--per-class", "8", "--epochs", "1", "--batch-size", "6"]


def link_tree(src: Path, dst: Path) -> None:
    """`src` copied as hard links: for files a test only reads (the build replaces, never edits)."""
    shutil.copytree(src, dst, copy_function=os.link)


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
    (root / "build.log").write_text(done.stderr)
    return root


def test_builds_every_step_from_nothing(built: Path) -> None:
    assert store.list_names(built / "store") == ["default"]
    manifest = store.read_manifest(built / "store" / "default" / "1")
    val_images = sorted((built / "data" / "val").rglob("*.*"))
    assert manifest.labels == sorted(p.name for p in (built / "data" / "train").iterdir())
    assert "ten_crop" in manifest.metrics  # evaluated on the generated validation set
    assert manifest.source["epoch"] == 0  # one epoch, as asked
    assert manifest.source["builtin"] == "synthetic"
    config = torch.load(built / "run" / "checkpoint.pt", weights_only=False)["config"]
    assert (config["schedule"], config["label_smoothing"]) == ("cosine", 0.1)  # quickstart recipe
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
        link_tree(built / part, tmp_path / part)
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
        loaded = json.loads(httpx.get(f"{url}/models").text)["loaded"]
        assert loaded["id"] == "default:1" and loaded["precision"] == "fp32"
        classes = sorted(p.name for p in (built / "data" / "train").iterdir())
        assert loaded["knows"] == f"3 classes: {', '.join(classes)}"
        assert "alexnet import-torchvision" in loaded["hint"]
        header = page_header(url)
    assert f"This model knows 3 classes: {', '.join(classes)}." in header
    assert "alexnet import-torchvision --name imagenet" in header


def page_header(url: str) -> str:
    """The page's header text, as headless Chromium shows it once the model is in."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        if os.environ.get("CI"):  # CI installs it: a missing browser there is a failure
            raise RuntimeError(f"{chromium} is missing: .ci/run should have installed chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function("document.querySelector('#model-line').textContent !== ''")
            return page.inner_text("header")
        finally:
            browser.close()


def test_the_log_says_what_the_model_knows_and_how_to_get_real_labels(built: Path) -> None:
    log = (built / "build.log").read_text()
    classes = sorted(p.name for p in (built / "data" / "train").iterdir())
    assert f"knows 3 classes: {', '.join(classes)}" in log
    assert (
        "alexnet import-torchvision --name imagenet --weights-file alexnet-owt-7be5be79.pth" in log
    )
    assert "offline" in log  # why it is not the ImageNet model
    # 24 images are too few to show that int8 agrees with fp32: refused, and fp32 is served
    assert "int8 not added" in log and "give more --images" in log
    assert "int8" not in store.read_manifest(built / "store" / "default" / "1").files


@pytest.fixture
def two_models(built: Path, tmp_path: Path) -> Path:
    """The built default and a second model, "other", in a copy of the store."""
    for part in ("data", "run"):  # only read: linked, not copied (checkpoints are big)
        link_tree(built / part, tmp_path / part)
    for part in ("store", "gallery"):
        shutil.copytree(built / part, tmp_path / part)
    shutil.copytree(tmp_path / "store" / "default", tmp_path / "store" / "other")
    m = store.read_manifest(tmp_path / "store" / "other" / "1")
    m.name, m.source = "other", {}
    write_json_atomic(tmp_path / "store" / "other" / "1" / "manifest.json", m.model_dump())
    return tmp_path


def test_with_two_models_quickstart_serves_the_default_and_says_so(two_models: Path) -> None:
    done = quickstart(two_models, "--build-only")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "holds default, other: serving default" in done.stderr
    assert "the model default:1 knows 3 classes" in done.stderr


def test_with_two_models_serve_refuses_at_start(two_models: Path) -> None:
    env = {**os.environ, "ALEXNET_STORE": str(two_models / "store"),
           "ALEXNET_GALLERY": str(two_models / "gallery"), "ALEXNET_PORT": "1"}  # fmt: skip
    env.pop("ALEXNET_MODEL", None)
    done = subprocess.run([sys.executable, "-m", "alexnet", "serve"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0
    assert "set ALEXNET_MODEL (or --model)" in done.stderr and "default, other" in done.stderr
    assert "Uvicorn running" not in done.stderr
