"""Inference request and response bodies (`service.oip.codec`) against tritonclient's own
`generate_request_body` and `parse_response_body` (public, server-free), and the malformed
bodies a client can send, each refused with the status and message the README documents."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import tritonclient.http as tc

from service.oip import codec
from service.oip.errors import ProtocolError

LIMIT = 1_000_000
Client = tc.InferenceServerClient


def parse(body: bytes, json_length: int | None = None) -> codec.Request:
    return codec.parse_request(body, json_length, max_json_bytes=LIMIT)


def parse_json(document) -> codec.Request:
    return parse(json.dumps(document).encode())


def refused(fragment: str, body: bytes, json_length: int | None = None, status: int = 400):
    with pytest.raises(ProtocolError) as info:
        parse(body, json_length)
    assert info.value.status_code == status
    assert fragment in info.value.message, info.value.message


def images_input(n: int, binary: bool) -> tuple[tc.InferInput, np.ndarray]:
    pixels = np.random.default_rng(n).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    item = tc.InferInput("images", list(pixels.shape), "UINT8")
    item.set_data_from_numpy(pixels, binary_data=binary)
    return item, pixels


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclients_request_bodies_parse_to_their_tensors(binary: bool) -> None:
    images, pixels = images_input(2, binary)
    files = np.array([b"\x89PNG\r\n\x1a\n\x00\xff", b"GIF89a"], dtype=object)
    blobs = tc.InferInput("image_bytes", [2], "BYTES")
    blobs.set_data_from_numpy(files, binary_data=True)  # not UTF-8: binary only
    outputs = [tc.InferRequestedOutput("fc7", binary_data=True),
               tc.InferRequestedOutput("probs", binary_data=False)]  # fmt: skip
    body, json_size = Client.generate_request_body(
        [images, blobs], outputs=outputs, request_id="r-17"
    )
    request = parse(body, json_size)
    assert list(request.inputs) == ["images", "image_bytes"] and request.id == "r-17"
    assert np.array_equal(request.inputs["images"].array(), pixels)
    assert request.inputs["image_bytes"].array().tolist() == files.tolist()
    assert request.outputs == [("fc7", True), ("probs", False)]
    assert request.binary_output is False


def test_without_outputs_tritonclient_asks_for_all_in_binary() -> None:
    images, _ = images_input(1, binary=False)
    body, json_size = Client.generate_request_body([images])
    assert json_size is None  # all JSON: no header
    request = parse(body)
    assert request.outputs is None and request.binary_output is True


def test_outputs_default_to_the_requests_binary_data_output() -> None:
    document = {
        "inputs": [{"name": "a", "shape": [1], "datatype": "UINT8", "data": [1]}],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "probs"}, {"name": "fc7", "parameters": {"binary_data": False}}],
    }
    assert parse_json(document).outputs == [("probs", True), ("fc7", False)]
    document["outputs"] = []  # an empty list: all outputs
    assert parse_json(document).outputs is None


def answer(outputs: list[codec.Output], request_id: str | None = "x"):
    body, header_length = codec.encode_response("tiny", "3", request_id, outputs)
    return body, header_length, Client.parse_response_body(body, header_length=header_length)


def test_responses_parse_with_tritonclient_json_and_binary() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((2, 5), dtype=np.float32)
    fc7 = rng.standard_normal((2, 4096)).astype(np.float32)
    body, header_length, result = answer(
        [codec.Output("probs", "FP32", probs, False), codec.Output("fc7", "FP32", fc7, True)]
    )
    assert header_length is not None and len(body) == header_length + fc7.nbytes
    assert np.array_equal(result.as_numpy("probs"), probs)
    assert np.array_equal(result.as_numpy("fc7"), fc7)
    response = result.get_response()
    assert response["model_name"] == "tiny" and response["model_version"] == "3"
    assert response["id"] == "x"
    assert response["outputs"][0]["shape"] == [2, 5] and "data" in response["outputs"][0]
    assert response["outputs"][1]["parameters"] == {"binary_data_size": 2 * 4096 * 4}
    assert "data" not in response["outputs"][1]


def test_an_all_json_response_is_plain_json_without_an_id_when_none_was_sent() -> None:
    probs = np.array([[0.25, 0.75]], dtype=np.float32)
    body, header_length, result = answer([codec.Output("probs", "FP32", probs, False)], None)
    assert header_length is None
    assert json.loads(body) == {
        "model_name": "tiny",
        "model_version": "3",
        "outputs": [{"name": "probs", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}],
    }
    assert np.array_equal(result.as_numpy("probs"), probs)


def binary_request(inputs: list[dict], binary: bytes) -> tuple[bytes, int]:
    header = json.dumps({"inputs": inputs}).encode()
    return header + binary, len(header)


def uint8(name: str = "images", shape=(2,), **parameters) -> dict:
    return {"name": name, "shape": list(shape), "datatype": "UINT8", "parameters": parameters}


def test_binary_inputs_take_their_bytes_in_the_order_listed() -> None:
    body, n = binary_request(
        [uint8("a", (2,), binary_data_size=2), uint8("b", (3,), binary_data_size=3)], b"abcde"
    )
    request = parse(body, n)
    assert request.inputs["a"].array().tobytes() == b"ab"
    assert request.inputs["b"].array().tobytes() == b"cde"


@pytest.mark.parametrize(
    ("inputs", "binary", "fragment"),
    [
        (
            [uint8(binary_data_size=2)],
            b"abc",
            "the binary data is 3 bytes, but the inputs' binary_data_size add up to 2",
        ),
        ([uint8(binary_data_size=4)], b"abc", "binary_data_size 4 runs past the end"),
        ([uint8(binary_data_size=-1)], b"", "binary_data_size must be an integer >= 0, not -1"),
        ([uint8(binary_data_size=True)], b"a", "not True"),
        ([uint8(binary_data_size="2")], b"ab", "not '2'"),
        ([uint8(binary_data_size=2.0)], b"ab", "not 2.0"),
        ([uint8()], b"ab", "has neither 'data' nor a binary_data_size"),
        ([uint8(binary_data_size=2) | {"data": [1, 2]}], b"ab", "both 'data' and a binary"),
        ([uint8(binary_data_size=1), uint8(binary_data_size=1)], b"ab", "given twice"),
        ([uint8(binary_data_size=2, shared_memory_region="r")], b"ab", "shared-memory"),
    ],
)
def test_binary_parts_that_do_not_add_up_are_refused(inputs, binary, fragment) -> None:
    refused(fragment, *binary_request(inputs, binary))


def test_a_header_length_past_the_body_is_refused() -> None:
    body, n = binary_request([uint8(binary_data_size=2)], b"ab")
    refused(f"Inference-Header-Content-Length is {len(body) + 1}, but the body is only",
            body, len(body) + 1)  # fmt: skip
    refused("not valid", body, n - 1)  # the JSON cut short
    refused("not valid", body, 0)


@pytest.mark.parametrize("value", ["-1", "1e3", "0x10", "12 ", "", "\u0663"])
def test_header_length_must_be_a_decimal_number(value: str) -> None:
    with pytest.raises(ProtocolError, match="must be a decimal number of bytes"):
        codec.header_length(value)
    assert codec.header_length("0042") == 42 and codec.header_length(None) is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "not valid"),
        (b"{", "not valid"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"inputs"', "must be a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [NaN]}]}',
         "NaN is not a JSON number"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"a": ' + b"9" * 5000 + b"}", "not valid"),
        (b"{}", "inputs: Field required"),
        (b'{"inputs": []}', "inputs: List should have at least 1 item"),
        (b'{"inputs": [{"name": "a", "shape": ["1"], "datatype": "UINT8", "data": [1]}]}',
         "inputs.0.shape.0: Input should be a valid integer"),
        (b'{"inputs": [{"name": "a", "shape": [true], "datatype": "UINT8", "data": [1]}]}',
         "inputs.0.shape.0"),
        (b'{"inputs": [{"name": 5, "shape": [1], "datatype": "UINT8", "data": [1]}]}',
         "inputs.0.name"),
        (b'{"inputs": [{"name": "a", "shape": 1, "datatype": "UINT8", "data": [1]}]}',
         "inputs.0.shape"),
        (b'{"inputs": [{"name": "a", "shape": [1], "data": [1]}]}', "inputs.0.datatype"),
        (b'{"id": 7, "inputs": [{"name": "a", "shape": [1], "datatype": "UINT8", "data": [1]}]}',
         "id: Input should be a valid string"),
        (b'{"inputs": {"name": "a"}}', "inputs: Input should be a valid list"),
    ],
)  # fmt: skip
def test_malformed_json_is_refused_with_what_is_wrong(body: bytes, fragment: str) -> None:
    refused(fragment, body)


def one_input(**request) -> dict:
    return {"inputs": [{"name": "a", "shape": [1], "datatype": "UINT8", "data": [1]}]} | request


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (one_input(parameters={"binary_data_output": 1}), "'binary_data_output' must be true"),
        (one_input(outputs=[{"name": "probs", "parameters": {"binary_data": "yes"}}]),
         "output 'probs': parameter 'binary_data' must be true or false"),
        (one_input(outputs=[{"name": "probs", "parameters": {"classification": 3}}]),
         "the classification extension is not supported"),
        (one_input(outputs=[{"name": "probs"}, {"name": "probs"}]), "requested twice"),
    ],
)  # fmt: skip
def test_bad_parameters_and_outputs_are_refused(document: dict, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_json(document)
    assert fragment in info.value.message and info.value.status_code == 400


def test_json_over_the_limit_is_413_before_it_is_parsed() -> None:
    body = b"{" + b" " * LIMIT + b"}"
    refused(f"the request's JSON is {LIMIT + 2} bytes; the limit is {LIMIT}", body, status=413)
    # binary data after the JSON does not count against the JSON's limit
    header = json.dumps({"inputs": [uint8(shape=(LIMIT + 5,), binary_data_size=LIMIT + 5)]})
    request = parse(header.encode() + b"\x07" * (LIMIT + 5), len(header))
    assert request.inputs["images"].array().shape == (LIMIT + 5,)


def test_bytes_input_from_binary_with_a_cut_length_prefix_is_refused() -> None:
    raw = struct.pack("<I", 3) + b"abc" + b"\x09\x00"
    body, n = binary_request(
        [{"name": "image_bytes", "shape": [2], "datatype": "BYTES",
          "parameters": {"binary_data_size": len(raw)}}], raw)  # fmt: skip
    with pytest.raises(ProtocolError, match="element 1 of 2: its 4-byte length is cut off"):
        parse(body, n).inputs["image_bytes"].array()
