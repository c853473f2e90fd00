"""Tensor data of the Open Inference Protocol (`service.oip.tensors`): JSON and binary forms
against tritonclient's own encoders (a client nobody here wrote) and hand-packed bytes, and
every malformed form refused with a 400 that names the problem."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from service.oip import tensors
from service.oip.errors import ProtocolError

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
           "FP16", "FP32", "FP64"]  # fmt: skip


def refused(fragment: str, call, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    assert info.value.status_code == 400
    assert fragment in info.value.message, info.value.message
    return info.value


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    if datatype == "BOOL":
        return rng.random(shape) < 0.5
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype)
    if dtype is not None:
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(datatype.lower())
    values = rng.integers(info.min, info.max, size=shape, dtype=datatype.lower(), endpoint=True)
    values.flat[0], values.flat[-1] = info.min, info.max  # both ends of the range
    return values


@pytest.mark.parametrize("datatype", NUMERIC)
def test_binary_data_round_trips_and_is_little_endian_row_major(datatype: str) -> None:
    array = sample(datatype, (2, 3, 4))
    raw = tensors.to_binary(array, datatype)
    # the form the extension describes, packed by hand with struct
    code = {"BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b",
            "INT16": "h", "INT32": "i", "INT64": "q", "FP16": "e", "FP32": "f",
            "FP64": "d"}[datatype]  # fmt: skip
    assert raw == struct.pack(f"<{array.size}{code}", *array.ravel().tolist())
    back = tensors.from_binary(raw, datatype, [2, 3, 4])
    assert back.shape == (2, 3, 4) and back.dtype == array.dtype
    assert np.array_equal(back, array)


@pytest.mark.parametrize("datatype", [d for d in NUMERIC if d != "FP16"])
def test_json_data_flat_or_nested_gives_the_same_array(datatype: str) -> None:
    array = sample(datatype, (2, 3, 4))
    flat = tensors.to_json(array, datatype)
    assert isinstance(flat, list) and len(flat) == 24
    for data in (flat, array.tolist()):
        back = tensors.from_json(data, datatype, [2, 3, 4])
        assert back.dtype == np.dtype(array.dtype).newbyteorder("=") and np.array_equal(back, array)


def test_fp32_json_values_are_exact() -> None:
    """FP32 written as JSON numbers and read back as float32 is bit for bit the same."""
    array = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    back = np.array(tensors.to_json(array, "FP32"), dtype=np.float32)
    assert back.tobytes() == array.tobytes()


def test_bytes_elements_match_tritonclients_serialization() -> None:
    elements = [b"", b"\x00\xff", b"a" * 300, "caf\u00e9".encode()]
    ours = tensors.join_bytes(elements)
    theirs = serialize_byte_tensor(np.array(elements, dtype=object)).item()
    assert ours == theirs
    assert ours[:4] == b"\0\0\0\0" and ours[4:8] == struct.pack("<I", 2)
    back = tensors.from_binary(theirs, "BYTES", [2, 2])
    assert back.shape == (2, 2) and back.ravel().tolist() == elements
    assert deserialize_bytes_tensor(tensors.to_binary(back, "BYTES")).tolist() == elements


def test_bytes_in_json_are_utf8_strings() -> None:
    back = tensors.from_json([["caf\u00e9", ""]], "BYTES", [1, 2])
    assert back.tolist() == [["caf\u00e9".encode(), b""]]
    refused("element 1 is a JSON int", tensors.from_json, ["a", 3], "BYTES", [2])
    refused("element 0 is a JSON list", tensors.from_json, [["a"], ["b", "c"]], "BYTES", [2])
    refused("not valid Unicode", tensors.from_json, ["\ud800"], "BYTES", [1])


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\x05\x00", "length is cut off at byte 0 of 2"),
        (struct.pack("<I", 3) + b"abc" + b"\x01\x00", "element 1 of 2: its 4-byte length is cut"),
        (struct.pack("<I", 2**32 - 1) + b"abc", "declares 4294967295 bytes, but only 3 remain"),
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 5) + b"ab", "declares 5 bytes"),
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b" + b"!", "1 bytes left over"),
    ],
)
def test_malformed_bytes_elements_are_refused(raw: bytes, fragment: str) -> None:
    refused(fragment, tensors.from_binary, raw, "BYTES", [2])


def test_binary_byte_count_must_match_datatype_and_shape() -> None:
    refused("is 5 bytes, but UINT8 of shape [2, 2] is 4 bytes",
            tensors.from_binary, b"x" * 5, "UINT8", [2, 2])  # fmt: skip
    refused("FP32 of shape [3] is 12 bytes", tensors.from_binary, b"x" * 8, "FP32", [3])
    refused("must be bytes 0 or 1", tensors.from_binary, b"\x00\x02", "BOOL", [2])


def test_a_huge_declared_shape_is_refused_without_allocating() -> None:
    # 10^12 images of 256x256x3 would be 196 PB; the count is compared, nothing allocated
    refused("is 196608000000000000 bytes",
            tensors.from_binary, b"x" * 10, "UINT8", [10**12, 256, 256, 3])  # fmt: skip
    refused("shape [1000000000000] has 1000000000000", tensors.from_json, [1], "UINT8", [10**12])
    refused("4-byte length is cut off", tensors.from_binary, b"", "BYTES", [10**12])


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [([-1, 3], ">= 0"), ([2, -5], ">= 0"), ([2, True], "integers"), ([2.0], "integers"),
     (["2"], "integers")],
)  # fmt: skip
def test_bad_dimensions_are_refused(shape: list, fragment: str) -> None:
    refused(fragment, tensors.from_binary, b"", "UINT8", shape)
    refused(fragment, tensors.from_json, [], "UINT8", shape)


@pytest.mark.parametrize(
    ("data", "datatype", "shape", "fragment"),
    [
        ("abc", "UINT8", [3], "must be a JSON array, not str"),
        ({"a": 1}, "UINT8", [1], "must be a JSON array, not dict"),
        (7, "UINT8", [1], "must be a JSON array, not int"),
        ([1, 2, 3], "UINT8", [2, 2], "'data' has 3 elements, but shape [2, 2] has 4"),
        ([1, 2, 3, 4, 5], "UINT8", [2, 2], "at least 5 elements"),
        ([[1, 2], [3]], "UINT8", [3], "not a regular array"),
        ([1, [2, 3]], "UINT8", [3], "not a regular array"),
        ([1.5, 2], "UINT8", [2], "UINT8 data must be JSON integers"),
        ([1.0, 2], "INT32", [2], "INT32 data must be JSON integers"),
        (["1", "2"], "UINT8", [2], "UINT8 data must be JSON integers"),
        ([None, 1], "UINT8", [2], "UINT8 data must be JSON integers"),
        ([{"a": 1}], "UINT8", [1], "UINT8 data must be JSON integers"),
        ([0, 256], "UINT8", [2], "must lie in [0, 255]"),
        ([-1, 0], "UINT8", [2], "must lie in [0, 255]"),
        ([-129], "INT8", [1], "must lie in [-128, 127]"),
        ([10**30], "INT64", [1], "must be JSON integers"),
        ([2**64], "UINT64", [1], "must lie in [0, 18446744073709551615]"),
        ([0, 2.5e19], "UINT64", [2], "must be JSON integers"),
        ([1, 0], "BOOL", [2], "BOOL data must be JSON true or false"),
        (["x"], "FP32", [1], "FP32 data must be JSON numbers"),
        ([True], "FP64", [1], "FP64 data must be JSON numbers"),
        ([1.0], "FP16", [1], "FP16 data has no JSON form"),
        ([1], "BF16", [1], "BF16 is not supported"),
        ([1], "UINT7", [1], "unknown datatype 'UINT7'"),
        ([1], "uint8", [1], "unknown datatype 'uint8'"),
    ],
)
def test_json_data_that_does_not_fit_is_refused(data, datatype, shape, fragment) -> None:
    refused(fragment, tensors.from_json, data, datatype, shape)


def test_json_data_nested_past_numpys_dimensions_is_refused() -> None:
    data: list | int = 1
    for _ in range(100):
        data = [data]
    refused("not a regular array", tensors.from_json, data, "UINT8", [1])


def test_integer_limits_are_accepted_at_both_ends() -> None:
    back = tensors.from_json([0, 2**64 - 1], "UINT64", [2])
    assert back.tolist() == [0, 2**64 - 1] and back.dtype == np.uint64
    assert tensors.from_json([-(2**63), 2**63 - 1], "INT64", [2]).tolist() == [-(2**63), 2**63 - 1]
    assert tensors.from_json([], "UINT8", [0, 256, 256, 3]).shape == (0, 256, 256, 3)
