"""The Open Inference Protocol (/v2) against a real server on loopback, through the real
`tritonclient[http]` client (see conftest.py: the model `tiny:1`, SMALL_LIMITS)."""

from __future__ import annotations

import io
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as tc
from PIL import Image
from tritonclient.utils import InferenceServerException

from core.imaging import load_256
from tests.service.conftest import encode, running_server, settled_readiness

K = 4  # classes of the tiny model


@pytest.fixture(scope="module")
def client(server: str) -> tc.InferenceServerClient:
    with tc.InferenceServerClient(url=server.removeprefix("http://"), network_timeout=120) as c:
        yield c


def predict(url: str, files: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """/predict's probabilities (all K, by class index) and fc7 for each file."""
    parts = [("image", (f"img{i}", data)) for i, data in enumerate(files)]
    r = httpx.post(f"{url}/predict", files=parts, params={"top_k": K, "embedding": "true"},
                   timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text
    probs = np.zeros((len(files), K), dtype=np.float32)
    for row, result in zip(probs, r.json()["results"], strict=True):
        for p in result["predictions"]:
            row[p["index"]] = p["probability"]
    return probs, np.array([res["embedding"] for res in r.json()["results"]], dtype=np.float32)


def images_input(pixels: np.ndarray, binary: bool = True) -> tc.InferInput:
    item = tc.InferInput("images", list(pixels.shape), "UINT8")
    item.set_data_from_numpy(pixels, binary_data=binary)
    return item


def bytes_input(files: list[bytes]) -> tc.InferInput:
    item = tc.InferInput("image_bytes", [len(files)], "BYTES")
    item.set_data_from_numpy(np.array(files, dtype=object), binary_data=True)
    return item


def assert_close(probs, fc7, expected_probs, expected_fc7) -> None:
    np.testing.assert_allclose(probs, expected_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fc7, expected_fc7, rtol=1e-4, atol=1e-4)


def test_server_live_ready_and_metadata(client: tc.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "alexnet-service" and meta["extensions"] == ["binary_tensor_data"]
    assert meta["version"]


@pytest.mark.parametrize("version", ["", "1"])
def test_model_metadata_and_readiness(client: tc.InferenceServerClient, version: str) -> None:
    meta = client.get_model_metadata("tiny", version)
    assert meta == {
        "name": "tiny",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "images", "datatype": "UINT8", "shape": [-1, 256, 256, 3]},
            {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": "probs", "datatype": "FP32", "shape": [-1, K]},
            {"name": "fc7", "datatype": "FP32", "shape": [-1, 4096]},
        ],
    }
    assert client.is_model_ready("tiny", version)


@pytest.mark.parametrize(
    ("name", "version", "fragment"),
    [("nope", "", "unknown model 'nope'; this server serves 'tiny' (version 1)"),
     ("tiny", "2", "version '2' of model 'tiny' is not loaded; the loaded version is 1"),
     ("tiny", "latest", "version 'latest'"), ("Tiny", "1", "unknown model 'Tiny'")],
)  # fmt: skip
def test_unknown_models_and_versions_are_404(
    client: tc.InferenceServerClient, server: str, name: str, version: str, fragment: str
) -> None:
    assert not client.is_model_ready(name, version)
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata(name, version)
    assert info.value.status() == "404" and fragment in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer(name, [images_input(np.zeros((1, 256, 256, 3), np.uint8))], version)
    assert info.value.status() == "404" and fragment in info.value.message()
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/ready"
    r = httpx.get(server + path)
    assert r.status_code == 404 and fragment in r.json()["error"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_images_equals_predict(
    client: tc.InferenceServerClient, server: str, sample_images, binary: bool
) -> None:
    files = [data for _, data in sample_images[:3]]
    pixels = np.stack([load_256(io.BytesIO(data)) for data in files])  # the one preprocessing
    outputs = [tc.InferRequestedOutput("probs", binary_data=binary),
               tc.InferRequestedOutput("fc7", binary_data=binary)]  # fmt: skip
    result = client.infer("tiny", [images_input(pixels, binary)], outputs=outputs)
    probs, fc7 = result.as_numpy("probs"), result.as_numpy("fc7")
    assert probs.shape == (3, K) and fc7.shape == (3, 4096)
    assert probs.dtype == fc7.dtype == np.float32
    assert_close(probs, fc7, *predict(server, files))
    response = result.get_response()
    assert response["model_name"] == "tiny" and response["model_version"] == "1"
    assert all(("data" in o) != binary for o in response["outputs"])


def test_infer_image_bytes_of_real_jpeg_and_png_equals_predict(
    client: tc.InferenceServerClient, server: str, sample_images
) -> None:
    png = encode(Image.open(io.BytesIO(sample_images[4][1])).convert("RGB"), "PNG")
    jpeg = encode(Image.open(io.BytesIO(sample_images[7][1])).convert("RGB"), "JPEG")
    files = [png, jpeg, sample_images[9][1]]
    result = client.infer("tiny", [bytes_input(files)], model_version="1", request_id="q-1")
    assert result.get_response()["id"] == "q-1"
    assert_close(result.as_numpy("probs"), result.as_numpy("fc7"), *predict(server, files))


def test_only_the_requested_outputs_are_answered(
    client: tc.InferenceServerClient, sample_images
) -> None:
    files = [sample_images[0][1]]
    full = client.infer("tiny", [bytes_input(files)])  # no outputs named: all, binary
    assert {o["name"] for o in full.get_response()["outputs"]} == {"probs", "fc7"}
    only_fc7 = client.infer("tiny", [bytes_input(files)],
                            outputs=[tc.InferRequestedOutput("fc7", binary_data=True)])  # fmt: skip
    assert only_fc7.as_numpy("probs") is None
    assert np.array_equal(only_fc7.as_numpy("fc7"), full.as_numpy("fc7"))
    as_json = [tc.InferRequestedOutput("probs", binary_data=False)]
    only_probs = client.infer("tiny", [bytes_input(files)], outputs=as_json)
    (out,) = only_probs.get_response()["outputs"]
    assert out["name"] == "probs" and len(out["data"]) == K and "parameters" not in out
    assert only_probs.as_numpy("fc7") is None
    np.testing.assert_array_equal(only_probs.as_numpy("probs"), full.as_numpy("probs"))


def test_a_json_only_exchange_over_plain_http(server: str, sample_images) -> None:
    """No tritonclient: the JSON form as the KServe spec writes it, nested data accepted."""
    pixels = load_256(io.BytesIO(sample_images[2][1]))[None]
    body = {"inputs": [{"name": "images", "shape": [1, 256, 256, 3], "datatype": "UINT8",
                        "data": pixels.tolist()}],
            "outputs": [{"name": "probs"}]}  # fmt: skip
    r = httpx.post(f"{server}/v2/models/tiny/infer", json=body, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in r.headers
    (out,) = r.json()["outputs"]
    assert out == {"name": "probs", "datatype": "FP32", "shape": [1, K], "data": out["data"]}
    np.testing.assert_allclose(out["data"], predict(server, [sample_images[2][1]])[0][0],
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_binary_responses_carry_the_header_length(server: str, sample_images) -> None:
    data = sample_images[1][1]
    inputs = [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",
               "parameters": {"binary_data_size": 4 + len(data)}}]  # fmt: skip
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    body = header + len(data).to_bytes(4, "little") + data
    r = httpx.post(f"{server}/v2/models/tiny/versions/1/infer", content=body, timeout=120,
                   headers={"Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    n = int(r.headers["inference-header-content-length"])
    described = json.loads(r.content[:n])["outputs"]
    assert [(o["name"], o["parameters"]["binary_data_size"]) for o in described] == [
        ("probs", 4 * K),
        ("fc7", 4 * 4096),
    ]
    assert len(r.content) == n + 4 * K + 4 * 4096
    probs = np.frombuffer(r.content[n : n + 4 * K], "<f4")
    np.testing.assert_allclose(probs, predict(server, [data])[0][0], rtol=1e-5, atol=1e-6)


def refusal(client: tc.InferenceServerClient, inputs, outputs=None) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", inputs, outputs=outputs)
    return info.value


def fp32_images() -> tc.InferInput:
    item = tc.InferInput("images", [1, 256, 256, 3], "FP32")
    item.set_data_from_numpy(np.zeros((1, 256, 256, 3), np.float32))
    return item


@pytest.mark.parametrize(
    ("make_inputs", "outputs", "status", "fragment"),
    [
        (lambda: [fp32_images()], None, "400", "input 'images' has datatype FP32; it takes UINT8"),
        (lambda: [images_input(np.zeros((1, 224, 224, 3), np.uint8))], None, "400",
         "has shape [1, 224, 224, 3]; it takes [N,256,256,3]"),
        (lambda: [images_input(np.zeros((5, 256, 256, 3), np.uint8))], None, "413",
         "5 images in one request; the limit is 4"),
        (lambda: [images_input(np.zeros((0, 256, 256, 3), np.uint8))], None, "400",
         "holds no image"),
        (lambda: [bytes_input([b"just some text"])], None, "415", "not an image"),
        (lambda: [bytes_input([b""])], None, "400", "empty"),
        (lambda: [bytes_input([encode(Image.new("RGB", (64, 64)), "PNG")[:60]])], None, "422",
         "truncated or corrupt"),
        (lambda: [bytes_input([encode(Image.new("RGB", (2100, 2100)), "PNG")])], None, "413",
         "pixels"),
        (lambda: [bytes_input([b"x"] * 5)], None, "413", "the limit is 4"),
        (lambda: [images_input(np.zeros((1, 256, 256, 3), np.uint8)), bytes_input([b"x"])], None,
         "400", "not both"),
        (lambda: [tc.InferInput("pixels", [1], "UINT8")], None, "400",
         "unknown input 'pixels'; the model takes 'images'"),
        (lambda: [images_input(np.zeros((1, 256, 256, 3), np.uint8))],
         [tc.InferRequestedOutput("fc6")], "400", "unknown output 'fc6'"),
        (lambda: [images_input(np.zeros((1, 256, 256, 3), np.uint8))],
         [tc.InferRequestedOutput("probs", class_count=3)], "400", "classification extension"),
    ],
    ids=["fp32", "224", "five-images", "zero-images", "text", "empty-file", "truncated-png",
         "too-many-pixels", "five-files", "both-inputs", "unknown-input", "unknown-output",
         "classification"],
)  # fmt: skip
def test_refusals_reach_tritonclient_with_their_message(
    client: tc.InferenceServerClient, make_inputs, outputs, status: str, fragment: str
) -> None:
    inputs = make_inputs()
    if inputs[0].name() == "pixels":
        inputs[0].set_data_from_numpy(np.zeros(1, np.uint8))
    error = refusal(client, inputs, outputs)
    assert error.status() == status and fragment in error.message(), (status, error)


def test_a_body_over_the_request_limit_is_413_in_the_protocols_form(server: str) -> None:
    """A 10 GB Content-Length on /v2 is answered 413 after the headers, with {"error": ...}."""
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n"
            b"Connection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:200]
    assert "request body larger than" in json.loads(body)["error"]


def test_compressed_bodies_are_refused_with_415(client: tc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [images_input(np.zeros((1, 256, 256, 3), np.uint8))],
                     request_compression_algorithm="gzip")  # fmt: skip
    assert info.value.status() == "415" and "Content-Encoding 'gzip'" in info.value.message()


def test_protocol_paths_answer_errors_in_the_protocols_form(server: str) -> None:
    r = httpx.get(f"{server}/v2/models/tiny/config")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    r = httpx.get(f"{server}/v2/models/tiny/infer")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json() == {"error": "Method Not Allowed"}
    # outside /v2 the service's own form stays
    assert set(httpx.get(f"{server}/gallery/{'0' * 32}").json()) == {"detail"}
    assert httpx.get(f"{server}/nowhere").json() == {"detail": "Not Found"}


def test_queue_full_is_503_with_retry_after(exported: Path, tmp_path: Path, sample_images) -> None:
    """A one-image queue and eight concurrent clients: some are refused like /predict's."""
    body = {"inputs": [{"name": "images", "shape": [1, 256, 256, 3], "datatype": "UINT8",
                        "parameters": {"binary_data_size": 196608}}]}  # fmt: skip
    head = json.dumps(body).encode()
    payload = head + load_256(io.BytesIO(sample_images[0][1])).tobytes()
    with running_server(exported.parent.parent, tmp_path / "gallery", max_queue="1",
                        max_batch="1") as url:  # fmt: skip

        def post(_: int) -> httpx.Response:
            headers = {"Inference-Header-Content-Length": str(len(head))}
            return httpx.post(
                f"{url}/v2/models/tiny/infer", content=payload, headers=headers, timeout=120
            )

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(16)))
    statuses = sorted({r.status_code for r in answers})
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
    for r in answers:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and "overloaded" in r.json()["error"]


def test_without_a_model_v2_is_live_but_answers_503_with_the_reason(tmp_path: Path) -> None:
    with running_server(tmp_path / "empty-store", tmp_path / "gallery", wait_ready=False) as url:
        assert "no model" in settled_readiness(url).json()["detail"]
        with tc.InferenceServerClient(url=url.removeprefix("http://")) as c:
            assert c.is_server_live() and not c.is_server_ready()
            assert not c.is_model_ready("tiny")
            assert c.get_server_metadata()["extensions"] == ["binary_tensor_data"]
            for call in (lambda: c.get_model_metadata("tiny"),
                         lambda: c.infer("tiny", [bytes_input([b"x"])])):  # fmt: skip
                with pytest.raises(InferenceServerException) as info:
                    call()
                assert info.value.status() == "503", info.value
                assert "not ready" in info.value.message() and "no model" in info.value.message()
        for path in ("/v2/health/ready", "/v2/models/tiny/ready", "/v2/models/tiny/versions/1"):
            r = httpx.get(url + path)
            assert r.status_code == 503 and r.headers["retry-after"] == "5", path
            assert "not ready" in r.json()["error"]
