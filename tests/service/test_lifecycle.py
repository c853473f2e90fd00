"""Start-up, readiness, restarts, and the offline gallery commands."""

from __future__ import annotations

import http.client
import select
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from alexnet.main import main as cli
from core import store
from service.gallery import Gallery
from tests.service.conftest import encode, running_server, settled_readiness


def test_not_ready_is_503_with_the_reason(tmp_path: Path, sample_images) -> None:
    with running_server(tmp_path / "empty-store", tmp_path / "gallery", wait_ready=False) as url:
        r = settled_readiness(url)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert "no model" in r.json()["detail"]
        r = httpx.post(f"{url}/predict", files=[("image", ("a", sample_images[0][1]))])
        assert (
            r.status_code == 503 and "not ready" in r.json()["detail"] and r.headers["retry-after"]
        )
        assert httpx.get(f"{url}/health/live").status_code == 200


def test_start_up_log_is_quiet_and_says_once_where_the_model_runs(
    exported: Path, tmp_path: Path
) -> None:
    """No red onnxruntime error about CUDA where there is no GPU, none of faiss's SIMD
    fallback lines, no warning at all: one plain line says where the model runs."""
    from core.gpu import cuda_gpus
    from tests.service.conftest import serve

    log = tmp_path / "server.log"
    with serve(exported.parent.parent, tmp_path / "gallery", log=log) as server:
        httpx.get(f"{server.url}/docs")
    lines = log.read_text().splitlines()
    assert not [line for line in lines if "\x1b[" in line], "colour codes: onnxruntime's logger"
    assert not [line for line in lines if "AVX" in line or "faiss.loader" in line]
    assert not [line for line in lines if " WARNING " in line or " ERROR " in line]
    assert not [line for line in lines if "[E:" in line or "[W:" in line]
    named = [line for line in lines if "ExecutionProvider" in line]
    assert len(named) == 1, named
    gpus, why = cuda_gpus()
    if gpus:
        assert "runs on the GPU with onnxruntime's CUDAExecutionProvider" in named[0]
    else:
        assert (
            f"runs on the CPU (no CUDA GPU: {why}) with onnxruntime's CPUExecutionProvider"
            in (named[0])
        )
    assert "tiny:1 (fp32)" in named[0]


def test_the_server_never_loads_torch(exported: Path, tmp_path: Path) -> None:
    """The service runs on onnxruntime alone (its image has no torch); even where torch is
    installed, `alexnet serve` does not load it (about 400 MB of memory and seconds of
    start-up), after serving a request either."""
    from tests.service.conftest import serve

    with serve(exported.parent.parent, tmp_path / "gallery") as server:
        image = encode(Image.new("RGB", (300, 200), (200, 30, 30)))
        assert httpx.post(f"{server.url}/predict", files={"image": ("a.jpg", image)}).is_success
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "libtorch" not in maps and "libc10" not in maps


def test_gallery_survives_a_restart(exported: Path, tmp_path: Path, sample_images) -> None:
    gallery = tmp_path / "gallery"
    with running_server(exported.parent.parent, gallery) as url:
        ids = [
            httpx.post(
                f"{url}/gallery", files=[("image", ("a", d))], data={"label": label}, timeout=60
            ).json()["items"][0]["id"]
            for label, d in sample_images[:3]
        ]
        before = httpx.post(f"{url}/similar", files=[("image", ("q", sample_images[1][1]))]).json()
    with running_server(exported.parent.parent, gallery) as url:
        page = httpx.get(f"{url}/gallery").json()
        assert [i["id"] for i in page["items"]] == ids
        after = httpx.post(f"{url}/similar", files=[("image", ("q", sample_images[1][1]))]).json()
        assert [n["id"] for n in after["neighbors"]] == [n["id"] for n in before["neighbors"]]
        assert after["neighbors"][0]["id"] == ids[1]
        assert httpx.get(f"{url}/gallery/{ids[2]}/image").content == sample_images[2][1]


@pytest.fixture
def two_versions(exported: Path, trained_run: Path, tmp_path: Path) -> Path:
    """tiny:1 (the session's export) and tiny:2 (the same run's best.pt) in a private store."""
    from training.checkpoint import load_checkpoint
    from training.export import export_checkpoint

    store_dir = tmp_path / "store"
    shutil.copytree(exported.parent.parent, store_dir)
    best = load_checkpoint(trained_run / "best.pt")
    best["model"] = {
        k: v * 0.5 if v.is_floating_point() and v.dim() > 1 else v for k, v in best["model"].items()
    }
    export_checkpoint(best, store_dir=store_dir, name="tiny")
    return store_dir


def test_index_then_reindex_with_another_model(
    two_versions: Path, synth_root: Path, tmp_path: Path
) -> None:
    gallery = tmp_path / "gallery"
    common = ["--store", str(two_versions), "--gallery", str(gallery), "--device", "cpu"]
    assert (
        cli(["index", str(synth_root / "val"), "--label-from-folder", "--model", "tiny:1", *common])
        == 0
    )
    v1 = store.read_manifest(two_versions / "tiny" / "1").files["fp32"].sha256
    with Gallery.open(gallery, model_sha256=v1, model_id="tiny:1/fp32") as g:
        assert len(g) == 12
        labels = {i.label for i in g.list(0, 100)[0]}
        first_id, _ = next(g.iter_images())
        old = g.get(first_id, with_vector=True).vector
    assert labels == {p.name for p in (synth_root / "val").iterdir()}

    # the service refuses to mix: tiny:2 made other vectors
    with running_server(two_versions, gallery, wait_ready=False, model="tiny:2") as url:
        r = settled_readiness(url)
        assert r.status_code == 503 and "reindex" in r.json()["detail"]

    assert cli(["reindex", "--model", "tiny:2", *common]) == 0
    v2 = store.read_manifest(two_versions / "tiny" / "2").files["fp32"].sha256
    with Gallery.open(gallery, model_sha256=v2, model_id="tiny:2/fp32") as g:
        assert len(g) == 12
        new = g.get(first_id, with_vector=True).vector
        assert g.search(new, 1)[0].id == first_id
    assert not (old == new).all()
    with running_server(two_versions, gallery, model="tiny:2") as url:
        assert httpx.get(f"{url}/gallery").json()["total"] == 12


def test_index_refuses_a_gallery_the_service_holds(
    exported: Path, tmp_path: Path, synth_root: Path
) -> None:
    gallery = tmp_path / "gallery"
    with running_server(exported.parent.parent, gallery):
        rc = cli(
            [
                "index",
                str(synth_root / "val"),
                "--store",
                str(exported.parent.parent),
                "--gallery",
                str(gallery),
                "--device",
                "cpu",
            ]
        )
        assert rc == 1


def connection_after_idle(url: str, idle: float) -> str:
    """Ask /health/live on one connection, stay idle `idle` seconds, then ask again on the same
    connection: "open" if the second answer came on it, "closed" if the server had closed it."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/health/live")
        assert conn.getresponse().read()
        sock = conn.sock
        time.sleep(idle)
        readable, _, _ = select.select([sock], [], [], 0)
        if readable and sock.recv(1, socket.MSG_PEEK) == b"":
            return "closed"
        conn.request("GET", "/health/live")
        assert conn.getresponse().status == 200 and conn.sock is sock
        return "open"
    finally:
        conn.close()


def test_idle_connections_outlive_the_clients_pool_expiry(tmp_path: Path) -> None:
    # httpx gives up an idle connection after 5 s; a server that closed it at the same moment
    # would fail a request sent on it then (RemoteProtocolError), so it must wait longer.
    with running_server(tmp_path / "store", tmp_path / "gallery", wait_ready=False) as url:
        assert connection_after_idle(url, 6.0) == "open"
    with running_server(
        tmp_path / "store", tmp_path / "gallery", wait_ready=False, keep_alive_s="1"
    ) as url:
        assert connection_after_idle(url, 2.5) == "closed"
