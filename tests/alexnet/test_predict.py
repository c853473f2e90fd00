"""`alexnet predict`: the store's model run here and a real service (--url) both give what
the exported model itself computes, as a table or JSON; bad files are named and skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from alexnet.local_server import free_port
from service.decode import decode
from tests.service.conftest import REPO, SMALL_LIMITS, running_server

NOT_AN_IMAGE = b"these are notes, not pixels\n" * 20


def predict(*args: str | Path) -> subprocess.CompletedProcess:
    """`alexnet predict ARGS` in a child process, as a user runs it."""
    env = {**os.environ, "ALEXNET_THREADS": "2"}
    argv = [sys.executable, "-m", "alexnet", "predict", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def store(exported: Path) -> Path:
    return exported.parent.parent


@pytest.fixture(scope="module")
def good(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 images (enough for the progress bar): the validation set and 4 training images."""
    root = tmp_path_factory.mktemp("good")
    shutil.copytree(synth_root / "val", root / "val")
    for path in sorted((synth_root / "train").rglob("*.*"))[:4]:
        shutil.copy(path, root / f"extra-{path.parent.name}-{path.name}")
    return root


@pytest.fixture(scope="module")
def mixed(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The validation images, a truncated JPEG, text named .png, and a .txt file."""
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(synth_root / "val", root / "val")
    jpeg = next(p for p in sorted(root.rglob("*")) if p.suffix in (".jpg", ".jpeg"))
    (root / "val" / "cut.jpg").write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    (root / "notes.png").write_bytes(NOT_AN_IMAGE)
    (root / "readme.txt").write_text("not an image suffix: never walked")
    return root


@pytest.fixture(scope="module")
def model_answers(exported: Path):
    """file -> the exported model's probabilities, computed here: the service's decode, then
    a plain onnxruntime session on model.onnx."""
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    labels = json.loads((exported / "manifest.json").read_text())["labels"]

    def probs_of(path: Path) -> np.ndarray:
        pixels, _ = decode(path.read_bytes(), max_bytes=2**30, max_pixels=2**30)
        (probs,) = session.run(["probs"], {"images": pixels[None]})
        return probs[0]

    return probs_of, labels


def check_predictions(predictions: list[dict], probs: np.ndarray, labels: list[str], k: int,
                      tolerance: float = 1e-5) -> None:  # fmt: skip
    """The k largest of `probs`, largest first, as {label, index, probability}."""
    assert len(predictions) == min(k, len(probs))
    got = [p["probability"] for p in predictions]
    assert got == sorted(got, reverse=True)
    for p in predictions:
        assert labels[p["index"]] == p["label"]
        assert p["probability"] == pytest.approx(float(probs[p["index"]]), abs=tolerance)
    # nothing left out was more probable than what was shown
    left_out = np.delete(probs, [p["index"] for p in predictions])
    assert left_out.size == 0 or left_out.max() <= min(got) + tolerance


def test_json_gives_the_models_own_top_k(store: Path, good: Path, model_answers) -> None:
    probs_of, labels = model_answers
    proc = predict(good, "--store", store, "--json", "--batch-size", "5")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the progress bar went to stderr, not into the JSON
    assert "predicting" in proc.stderr and "16/16" in proc.stderr
    assert doc["model"] == "tiny:1" and doc["skipped"] == []
    files = [r["file"] for r in doc["results"]]
    assert files == [str(p) for p in sorted(good.rglob("*.*"))]  # recursive, sorted
    for result in doc["results"]:
        # 5 asked of a 4-class model: all 4, most probable first
        check_predictions(result["predictions"], probs_of(Path(result["file"])), labels, 4)
        assert sum(p["probability"] for p in result["predictions"]) == pytest.approx(1, abs=1e-4)


def test_table_has_a_row_per_label(store: Path, good: Path, model_answers) -> None:
    probs_of, labels = model_answers
    chosen = sorted((good / "val").rglob("*.*"))[:3]
    proc = predict(*chosen, "--store", store, "--model", "tiny:1", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    header, *rows = [line.split() for line in proc.stdout.splitlines()]
    assert header == ["file", "rank", "label", "probability"]
    assert [(r[0], r[1]) for r in rows] == [(str(p), rank) for p in chosen for rank in "12"]
    assert "predicting" not in proc.stderr  # 3 files: no bar
    for path in chosen:
        mine = [r for r in rows if r[0] == str(path)]
        shown = [{"label": r[2], "index": labels.index(r[2]), "probability": float(r[3])}
                 for r in mine]  # fmt: skip
        check_predictions(shown, probs_of(path), labels, 2, tolerance=5e-5)  # 4 decimals


def test_top_k_is_clipped_to_the_classes_and_checked(store: Path, good: Path) -> None:
    image = sorted(good.rglob("*.*"))[0]
    proc = predict(image, "--store", store, "--json", "--top-k", "1000")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert sorted(p["index"] for p in result["predictions"]) == [0, 1, 2, 3]
    (one,) = json.loads(predict(image, "--store", store, "--json", "--top-k", "1").stdout)[
        "results"
    ]
    assert one["predictions"] == result["predictions"][:1]
    proc = predict(image, "--store", store, "--top-k", "0")
    assert proc.returncode == 2 and "--top-k must be between 1 and 1000" in proc.stderr


@pytest.fixture(scope="module")
def local_mixed(store: Path, mixed: Path) -> subprocess.CompletedProcess:
    """`alexnet predict MIXED --json`, with readme.txt and a missing file named too."""
    return predict(mixed, mixed / "readme.txt", mixed / "gone.jpg", "--store", store, "--json")


def test_bad_files_are_named_and_skipped_and_the_rest_predicted(
    local_mixed: subprocess.CompletedProcess, mixed: Path, model_answers
) -> None:
    probs_of, labels = model_answers
    proc = local_mixed
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    good_files = sorted(p for p in (mixed / "val").rglob("*.*") if p.name != "cut.jpg")
    assert [r["file"] for r in doc["results"]] == [str(p) for p in good_files]
    for result in doc["results"]:
        check_predictions(result["predictions"], probs_of(Path(result["file"])), labels, 5)
    reasons = {s["file"]: s["reason"] for s in doc["skipped"]}
    assert reasons.keys() == {str(mixed / n) for n in ("val/cut.jpg", "notes.png", "readme.txt",
                                                       "gone.jpg")}  # fmt: skip
    assert "truncated or corrupt" in reasons[str(mixed / "val" / "cut.jpg")]
    assert "not an image" in reasons[str(mixed / "notes.png")]
    assert "not an image" in reasons[str(mixed / "readme.txt")]  # named, so tried
    assert "No such file" in reasons[str(mixed / "gone.jpg")]
    for file, reason in reasons.items():  # each named on stderr with its reason
        assert f"skipped {file}: {reason}" in proc.stderr
    assert f"{len(good_files)} of {len(good_files) + 4} files predicted" in proc.stderr


def test_nothing_to_predict_is_a_usage_error(store: Path, tmp_path: Path, good: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    proc = predict(tmp_path / "empty", "--store", store)
    assert proc.returncode == 2 and "no images found" in proc.stderr and proc.stdout == ""
    proc = predict(good, "--store", store, "--model", "nope")
    assert proc.returncode == 2 and "no model 'nope'" in proc.stderr and "tiny" in proc.stderr
    proc = predict(good, "--url", "http://127.0.0.1:1", "--model", "tiny")
    assert proc.returncode == 2 and "--model" in proc.stderr


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real service taking at most 4 images per request (SMALL_LIMITS)."""
    gallery = tmp_path_factory.mktemp("predict-server") / "gallery"
    with running_server(store, gallery, **SMALL_LIMITS) as url:
        yield url


def test_url_gives_the_same_answers_as_the_model_here(
    server: str, mixed: Path, local_mixed: subprocess.CompletedProcess
) -> None:
    # 8 files per request to a service that takes 4: refused (413), then sent one by one,
    # which also names the files the service cannot read (415, 422); then 4 per request
    proc = predict(mixed, mixed / "readme.txt", mixed / "gone.jpg", "--url", server, "--json",
                   "--batch-size", "8")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    remote, local = json.loads(proc.stdout), json.loads(local_mixed.stdout)
    assert remote["model"] == local["model"] == "tiny:1"
    assert [r["file"] for r in remote["results"]] == [r["file"] for r in local["results"]]
    for mine, theirs in zip(remote["results"], local["results"], strict=True):
        assert [p["index"] for p in mine["predictions"]] == [
            p["index"] for p in theirs["predictions"]
        ]
        for a, b in zip(mine["predictions"], theirs["predictions"], strict=True):
            assert (a["label"], a["index"]) == (b["label"], b["index"])
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)
    # the same files refused for the same reasons; the service adds its status code
    local_reasons = {s["file"]: s["reason"] for s in local["skipped"]}
    remote_reasons = {s["file"]: s["reason"] for s in remote["skipped"]}
    assert remote_reasons.keys() == local_reasons.keys()
    assert remote_reasons[str(mixed / "notes.png")] == local_reasons[str(mixed / "notes.png")] + (
        " (HTTP 415)"
    )
    assert remote_reasons[str(mixed / "val" / "cut.jpg")].endswith("(HTTP 422)")
    assert "No such file" in remote_reasons[str(mixed / "gone.jpg")]  # never sent
    assert (
        "refused 8 images in one request" in proc.stderr and "sending 4 per request" in proc.stderr
    )


def test_url_table_matches_the_local_table(server: str, store: Path, good: Path) -> None:
    chosen = sorted(good.rglob("*.*"))[:5]
    remote = predict(*chosen, "--url", server, "--top-k", "3")
    local = predict(*chosen, "--store", store, "--top-k", "3")
    assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
    remote_rows = [line.split() for line in remote.stdout.splitlines()]
    local_rows = [line.split() for line in local.stdout.splitlines()]
    assert len(remote_rows) == len(local_rows) == 1 + 5 * 3
    for mine, theirs in zip(remote_rows[1:], local_rows[1:], strict=True):
        assert mine[:3] == theirs[:3]  # file, rank, label
        assert float(mine[3]) == pytest.approx(float(theirs[3]), abs=1.01e-4)  # 4 decimals


def test_url_without_a_service_says_so(good: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = predict(good, "--url", url, "--json")
    assert proc.returncode == 1
    assert f"cannot reach the service at {url}" in proc.stderr and "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["model"] is None and doc["results"] == []
    assert len(doc["skipped"]) == 16 and all("not predicted" in s["reason"] for s in doc["skipped"])


def test_url_waits_as_a_503_says_then_gives_up(store: Path, good: Path, tmp_path: Path) -> None:
    image = sorted(good.rglob("*.*"))[0]
    # a service whose model cannot load stays up and answers 503, Retry-After: 5
    with running_server(store, tmp_path / "gallery", wait_ready=False, model="nope") as url:
        start = time.monotonic()
        proc = predict(image, "--url", url, "--retries", "1")
        waited = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    assert "answered 503 (not ready: FileNotFoundError: no model 'nope'" in proc.stderr
    assert (
        "trying again in 5 s" in proc.stderr and "still answered 503 after 2 tries" in proc.stderr
    )
    assert waited >= 5


def test_url_that_is_not_the_service_stops_at_once(server: str, good: Path) -> None:
    proc = predict(good, "--url", f"{server}/not-here", "--json")
    assert proc.returncode == 1
    assert "/not-here/predict answered 404" in proc.stderr
    assert "WARNING" not in proc.stderr  # one error, not one 404 per file
    doc = json.loads(proc.stdout)
    assert doc["results"] == [] and len(doc["skipped"]) == 16
