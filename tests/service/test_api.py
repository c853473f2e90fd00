"""The HTTP API against a real server on loopback (see conftest.py)."""

from __future__ import annotations

import io
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from core.model_loader import load_model
from service.decode import decode
from tests.service.conftest import API_KEY, encode, serve

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _predict(url: str, images: list[bytes], **params) -> httpx.Response:
    files = [("image", (f"img{i}", data)) for i, data in enumerate(images)]
    return httpx.post(f"{url}/predict", files=files, params=params, timeout=60)


def _assert_same_predictions(expected: list[dict], got: list[dict]) -> None:
    """Result by result: the same classes in the same order, with the same probabilities."""
    for one, other in zip(expected, got, strict=True):
        mine, theirs = one["predictions"], other["predictions"]
        assert [p["index"] for p in mine] == [p["index"] for p in theirs]
        np.testing.assert_allclose(
            [p["probability"] for p in mine],
            [p["probability"] for p in theirs],
            rtol=1e-4,
            atol=1e-6,
        )


def test_top5_is_the_engines_own_output(server: str, exported: Path, sample_images) -> None:
    engine = load_model(exported.parent.parent, "tiny", precision="fp32", device="cpu")
    for _, data in sample_images[:3]:
        r = _predict(server, [data], top_k=5, embedding="true")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "tiny:1"
        (result,) = body["results"]
        probs, fc7 = engine.session.run(
            None, {"images": decode(data, max_bytes=10**8, max_pixels=10**9)[0][None]}
        )
        expected = np.argsort(-probs[0], kind="stable")[:4]  # 4 classes: top_k is capped at 4
        assert [p["index"] for p in result["predictions"]] == expected.tolist()
        assert [p["label"] for p in result["predictions"]] == [
            engine.manifest.labels[i] for i in expected
        ]
        np.testing.assert_allclose(
            [p["probability"] for p in result["predictions"]], probs[0][expected], rtol=1e-5
        )
        np.testing.assert_allclose(result["embedding"], fc7[0], rtol=1e-4, atol=1e-4)


def test_batched_and_concurrent_requests_answer_like_single_ones(
    server: str, sample_images
) -> None:
    datas = [d for _, d in sample_images[:4]]
    singles = [_predict(server, [d], top_k=3).json()["results"][0] for d in datas]
    batched = _predict(server, datas, top_k=3).json()["results"]  # upload order kept
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(
            pool.map(lambda d: _predict(server, [d], top_k=3).json()["results"][0], datas * 2)
        )
    for got in (batched, concurrent[:4], concurrent[4:]):
        _assert_same_predictions(singles, got)
    assert "embedding" not in singles[0]


def test_two_engine_instances_answer_concurrent_requests_like_one(
    server: str, exported: Path, sample_images, tmp_path: Path
) -> None:
    """ALEXNET_INSTANCES=2 (one intra-op thread each): two session calls at once, and the
    same answers as the default server's."""
    datas = [d for _, d in sample_images[:4]]
    singles = [_predict(server, [d], top_k=3).json()["results"][0] for d in datas]
    log = tmp_path / "server.log"
    with serve(exported.parent.parent, tmp_path / "gallery", log=log, instances="2",
               threads="1", max_batch="1") as running:  # fmt: skip
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda d: _predict(running.url, [d], top_k=3), datas * 2))
        metrics = httpx.get(f"{running.url}/metrics").text
    assert "2 engine call(s) at once, up to 1 images each" in log.read_text()
    assert [r.status_code for r in got] == [200] * 8
    _assert_same_predictions(singles * 2, [r.json()["results"][0] for r in got])
    calls = re.search(r"^alexnet_batch_images_count(?:\{[^}]*\})? (\S+)$", metrics, re.M)
    assert calls and float(calls.group(1)) >= 8, metrics[:2000]


def test_gallery_round_trip(server: str, sample_images) -> None:
    (label, data), (label2, data2) = sample_images[0], sample_images[5]
    r = httpx.post(
        f"{server}/gallery",
        files=[("image", ("a.png", data))],
        data={"label": label, "metadata": '{"source": "test", "n": 1}'},
        headers=AUTH,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    (item,) = r.json()["items"]
    r = httpx.post(
        f"{server}/gallery", files=[("image", ("b", data2))], data={"label": label2}, headers=AUTH
    )
    other = r.json()["items"][0]["id"]

    got = httpx.get(f"{server}/gallery/{item['id']}").json()
    assert got["label"] == label and got["metadata"] == {"source": "test", "n": 1}
    assert httpx.get(f"{server}/gallery/{item['id']}/image").content == data
    page = httpx.get(f"{server}/gallery", params={"limit": 500}).json()
    assert item["id"] in [i["id"] for i in page["items"]] and page["total"] >= 2

    near = httpx.post(f"{server}/similar", files=[("image", ("q", data))], params={"k": 2}).json()[
        "neighbors"
    ]
    assert near[0]["id"] == item["id"] and near[0]["distance"] == pytest.approx(0, abs=1e-3)
    assert near[0]["label"] == label and near[0]["metadata"]["source"] == "test"
    assert all(a["distance"] <= b["distance"] for a, b in zip(near, near[1:], strict=False))
    by_id = httpx.get(f"{server}/gallery/{item['id']}/similar", params={"k": 5}).json()["neighbors"]
    assert item["id"] not in [n["id"] for n in by_id] and other in [n["id"] for n in by_id]

    assert httpx.delete(f"{server}/gallery/{item['id']}", headers=AUTH).status_code == 204
    assert httpx.get(f"{server}/gallery/{item['id']}").status_code == 404
    near = httpx.post(f"{server}/similar", files=[("image", ("q", data))], params={"k": 50}).json()[
        "neighbors"
    ]
    assert item["id"] not in [n["id"] for n in near]
    assert httpx.delete(f"{server}/gallery/{item['id']}", headers=AUTH).status_code == 404


def test_euclidean_distances_are_those_of_the_fc7_vectors(server: str, sample_images) -> None:
    datas = [d for _, d in sample_images[6:9]]
    ids = httpx.post(
        f"{server}/gallery",
        files=[("image", (f"{i}", d)) for i, d in enumerate(datas)],
        headers=AUTH,
        timeout=60,
    ).json()["items"]
    vectors = [
        _predict(server, [d], embedding="true").json()["results"][0]["embedding"] for d in datas
    ]
    near = httpx.get(f"{server}/gallery/{ids[0]['id']}/similar", params={"k": 500}).json()[
        "neighbors"
    ]
    by_id = {n["id"]: n["distance"] for n in near}
    for j in (1, 2):
        expected = float(np.linalg.norm(np.subtract(vectors[0], vectors[j])))
        assert by_id[ids[j]["id"]] == pytest.approx(expected, rel=1e-4, abs=1e-3)


def test_gallery_writes_need_the_api_key(server: str, sample_images) -> None:
    files = [("image", ("a", sample_images[0][1]))]
    before = httpx.get(f"{server}/gallery").json()["total"]
    assert httpx.post(f"{server}/gallery", files=files).status_code == 401
    r = httpx.post(f"{server}/gallery", files=files, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.delete(f"{server}/gallery/{'0' * 32}").status_code == 401
    assert httpx.get(f"{server}/gallery").json()["total"] == before


def test_bad_metadata_is_refused_and_changes_nothing(server: str, sample_images) -> None:
    before = httpx.get(f"{server}/gallery").json()["total"]
    files = [("image", ("a", sample_images[0][1]))]
    for meta, status in (
        ("[1, 2]", 422),
        ("{not json", 422),
        ('{"x": "' + "y" * 20000 + '"}', 413),
    ):
        r = httpx.post(f"{server}/gallery", files=files, data={"metadata": meta}, headers=AUTH)
        assert r.status_code == status, (meta[:20], r.text)
    assert httpx.get(f"{server}/gallery").json()["total"] == before


def test_health_models_metrics_and_docs(server: str) -> None:
    ready = httpx.get(f"{server}/health/ready").json()
    assert ready == {"status": "ready", "model": "tiny:1", "gallery": "ok"}
    models = httpx.get(f"{server}/models").json()
    assert (
        models["loaded"]["id"] == "tiny:1"
        and models["loaded"]["provider"] == "CPUExecutionProvider"
    )
    assert models["available"] == ["tiny:1"]
    labels = models["loaded"]["labels"]
    assert models["loaded"]["knows"] == f"{len(labels)} classes: {', '.join(labels)}"
    assert models["loaded"]["hint"] is None
    text = httpx.get(f"{server}/metrics").text
    assert 'alexnet_requests_total{endpoint="/predict",method="POST",status="200"}' in text
    assert "alexnet_batch_images_bucket" in text and "alexnet_gallery_items" in text
    assert (
        'alexnet_model_info{model="tiny:1",precision="fp32",provider="CPUExecutionProvider"}'
        in text
    )
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/predict", "/similar", "/gallery", "/gallery/{item_id}"} <= schema["paths"].keys()
    assert httpx.get(f"{server}/docs").status_code == 200


def _sample(text: str, name: str) -> float:
    return next(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
    )


def test_metrics_count_the_sessions_cpu_within_the_processs(server: str, sample_images) -> None:
    """alexnet_engine_cpu_seconds_total grows with each /predict and stays below the whole
    process's CPU (process_cpu_seconds_total): the difference is the service's own work."""
    before = httpx.get(f"{server}/metrics").text
    for _, data in sample_images[:3]:
        r = httpx.post(f"{server}/predict", files={"image": ("a.jpg", data, "image/jpeg")})
        assert r.status_code == 200
    after = httpx.get(f"{server}/metrics").text
    engine = [_sample(t, "alexnet_engine_cpu_seconds_total") for t in (before, after)]
    process = [_sample(t, "process_cpu_seconds_total") for t in (before, after)]
    assert engine[1] > engine[0]
    assert engine[1] <= process[1] + 0.01  # /proc counts in 10 ms ticks


def test_docs_assets_are_served_and_named_in_the_metrics(server: str) -> None:
    """/docs and /redoc load their scripts from this server, and /metrics counts the docs
    pages, the schema and the asset files under their own routes, not as "unmatched"."""
    docs = httpx.get(f"{server}/docs").text
    scripts = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', docs)
    assert scripts and all(s.startswith("/docs-assets/") for s in scripts), scripts
    for asset in scripts:
        r = httpx.get(f"{server}{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000, asset
    redoc = httpx.get(f"{server}/redoc").text
    assert '"/docs-assets/redoc.standalone.js"' in redoc and "https://" not in redoc
    httpx.get(f"{server}/openapi.json")
    httpx.get(f"{server}/static/app.js")
    text = httpx.get(f"{server}/metrics").text
    for endpoint in ("/docs", "/redoc", "/openapi.json", "/docs-assets/{path}", "/static/{path}"):
        assert f'alexnet_requests_total{{endpoint="{endpoint}",method="GET",status="200"}}' in text
    assert 'endpoint="unmatched",method="GET",status="200"' not in text


def test_request_larger_than_the_limit_is_refused_before_reading(server: str) -> None:
    """A 10 GB Content-Length is answered 413 after the headers, without sending the body."""
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n"
            b"Content-Type: multipart/form-data; boundary=abc\r\n\r\n"
        )
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer[:200]


def test_decoded_pixels_match_the_training_preprocessing(sample_images) -> None:
    from core.imaging import load_256

    for _, data in sample_images[:4]:
        assert np.array_equal(
            decode(data, max_bytes=10**8, max_pixels=10**9)[0], load_256(io.BytesIO(data))
        )


def test_model_pictures_are_served_from_the_version(server: str, exported: Path) -> None:
    import hashlib

    from core.store import read_manifest

    pictures = httpx.get(f"{server}/models").json()["loaded"]["pictures"]
    manifest = read_manifest(exported)
    assert set(pictures) == set(manifest.pictures) and "filters" in pictures
    r = httpx.get(server + pictures["filters"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert hashlib.sha256(r.content).hexdigest() == manifest.pictures["filters"].sha256
    assert Image.open(io.BytesIO(r.content)).size[0] > 0
    for name in ("nope", "..%2Fmanifest.json", "model.onnx"):
        r = httpx.get(f"{server}/models/pictures/{name}")
        assert r.status_code == 404 and "detail" in r.json(), name


def test_non_finite_model_outputs_are_a_500_and_nothing_is_stored(
    overflowing_store: Path, tmp_path: Path
) -> None:
    """A model that gives NaN for some images (an overflowing fp16 file, here a graph that
    does it for bright images): those get a 500 that says so on every route that runs the
    model, the gallery keeps nothing of them, and other images are answered."""
    bright = encode(Image.new("RGB", (300, 200), (200, 200, 200)))
    dark = encode(Image.new("RGB", (300, 200), (20, 20, 20)))
    log = tmp_path / "server.log"
    with serve(overflowing_store, tmp_path / "gallery", log=log, api_key=API_KEY,
               model="tiny:2") as running:  # fmt: skip
        url = running.url
        r = _predict(url, [bright])
        assert r.status_code == 500
        assert "tiny:2 (fp32) gave NaN or infinite outputs" in r.json()["detail"]
        r = httpx.post(f"{url}/gallery", files=[("image", ("b.jpg", bright))], headers=AUTH)
        assert r.status_code == 500 and "NaN" in r.json()["detail"]
        assert httpx.get(f"{url}/gallery").json()["total"] == 0
        r = httpx.post(f"{url}/similar", files=[("image", ("b.jpg", bright))])
        assert r.status_code == 500
        body = {"inputs": [{"name": "images", "shape": [1, 256, 256, 3], "datatype": "UINT8",
                            "data": [200] * (256 * 256 * 3)}]}  # fmt: skip
        r = httpx.post(f"{url}/v2/models/tiny/infer", json=body, timeout=60)
        assert r.status_code == 500 and "NaN" in r.json()["error"]
        r = _predict(url, [dark])
        assert r.status_code == 200 and len(r.json()["results"][0]["predictions"]) == 4
        r = httpx.post(f"{url}/gallery", files=[("image", ("d.jpg", dark))], headers=AUTH)
        assert r.status_code == 201
        assert httpx.get(f"{url}/gallery").json()["total"] == 1
    assert "model error: tiny:2 (fp32) gave NaN" in log.read_text()
