"""Tensor data of the protocol <-> numpy arrays, checked before anything large is allocated.

A tensor travels either as JSON (`"data"`: the elements in row-major order, flat or nested)
or, with Triton's binary tensor data extension, as raw bytes after the JSON object:
little-endian, row-major, no padding; BOOL one byte (0 or 1); BYTES each element a 4-byte
little-endian unsigned length followed by that many bytes.

Everything here raises `ProtocolError` (400) for data that does not fit the datatype and the
shape, and checks the sizes the shape declares against the data actually sent before
converting, so a huge declared shape costs nothing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.oip.errors import ProtocolError

# The protocol's datatypes and their little-endian numpy dtypes (BYTES: a Python bytes
# object per element). BF16 has no numpy dtype: it is named, and refused as data.
DTYPES: dict[str, np.dtype | None] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
    "BF16": None,
}
DATATYPES = tuple(DTYPES)
LENGTH_PREFIX = struct.Struct("<I")  # a BYTES element's length


def check_datatype(datatype: str) -> np.dtype:
    """The numpy dtype of a protocol datatype; unknown names and BF16 are refused."""
    if datatype not in DTYPES:
        raise ProtocolError(
            f"unknown datatype {datatype!r}; the protocol's are {', '.join(DATATYPES)}"
        )
    dtype = DTYPES[datatype]
    if dtype is None:
        raise ProtocolError(f"datatype {datatype} is not supported by this server")
    return dtype


def check_shape(shape: Sequence[int]) -> int:
    """The number of elements of `shape`; every dimension must be an integer >= 0."""
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ProtocolError(f"shape {list(shape)}: dimensions must be integers")
        if dim < 0:
            raise ProtocolError(f"shape {list(shape)}: dimensions must be >= 0")
    return math.prod(shape)  # Python integers: no overflow, however large the claim


def byte_size(datatype: str, shape: Sequence[int]) -> int:
    """Bytes of a fixed-size tensor's binary data (BYTES has no fixed size)."""
    dtype = check_datatype(datatype)
    if datatype == "BYTES":
        raise ProtocolError("BYTES tensors have no fixed byte size")
    return check_shape(shape) * dtype.itemsize


def from_binary(raw: bytes, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """Binary tensor data -> an array of `shape` (BYTES: dtype object, one `bytes` each).

    Raises:
        ProtocolError: the byte count does not fit the datatype and shape (or, for BYTES,
            the elements do not: a cut length prefix, an element past the end, extra bytes).
    """
    count = check_shape(shape)
    if datatype == "BYTES":
        return np.array(split_bytes(raw, count), dtype=object).reshape(shape)
    expected = byte_size(datatype, shape)
    if len(raw) != expected:
        raise ProtocolError(
            f"binary data is {len(raw)} bytes, but {datatype} of shape {list(shape)} "
            f"is {expected} bytes"
        )
    array = np.frombuffer(raw, dtype=check_datatype(datatype)).reshape(shape)
    if datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
        raise ProtocolError("BOOL binary data must be bytes 0 or 1")
    return array


def split_bytes(raw: bytes, count: int) -> list[bytes]:
    """`count` BYTES elements from their binary form, which they must fill exactly."""
    elements, offset = [], 0
    for i in range(count):
        if offset + LENGTH_PREFIX.size > len(raw):
            raise ProtocolError(
                f"BYTES element {i} of {count}: its 4-byte length is cut off at byte {offset} "
                f"of {len(raw)}"
            )
        (length,) = LENGTH_PREFIX.unpack_from(raw, offset)
        offset += LENGTH_PREFIX.size
        if offset + length > len(raw):
            raise ProtocolError(
                f"BYTES element {i} of {count} declares {length} bytes, but only "
                f"{len(raw) - offset} remain"
            )
        elements.append(raw[offset : offset + length])
        offset += length
    if offset != len(raw):
        raise ProtocolError(
            f"{len(raw) - offset} bytes left over after the {count} BYTES elements of the shape"
        )
    return elements


def join_bytes(elements: Sequence[bytes]) -> bytes:
    """BYTES elements -> their binary form (each a 4-byte length, then the bytes)."""
    return b"".join(LENGTH_PREFIX.pack(len(e)) + e for e in elements)


def from_json(data: Any, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """JSON tensor data (flat or nested lists, row-major) -> an array of `shape`.

    Integers must be JSON integers within the datatype's range, BOOL JSON booleans, floats
    JSON numbers; FP16 has no JSON form (the protocol sends it as binary data); BYTES
    elements are strings (encoded as UTF-8).
    """
    dtype = check_datatype(datatype)
    count = check_shape(shape)
    if not isinstance(data, list):
        raise ProtocolError(f"'data' must be a JSON array, not {type(data).__name__}")
    if datatype == "FP16":
        raise ProtocolError("FP16 data has no JSON form; send it as binary data")
    if len(data) > count:  # cheap before numpy looks at nested lists
        raise ProtocolError(
            f"'data' has at least {len(data)} elements, but shape {list(shape)} has {count}"
        )
    try:
        array = np.array(data, dtype=object if datatype == "BYTES" else None)
    except (ValueError, TypeError) as e:  # ragged nesting, mixed lists and scalars
        raise ProtocolError(f"'data' is not a regular array: {e}") from None
    if array.size != count:
        raise ProtocolError(
            f"'data' has {array.size} elements, but shape {list(shape)} has {count}"
        )
    if datatype == "BYTES":
        return _json_bytes(array).reshape(shape)
    return _json_numbers(array, data, datatype, dtype).reshape(shape)


def _json_bytes(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    for i, element in enumerate(flat):
        if not isinstance(element, str):
            raise ProtocolError(
                f"BYTES element {i} is a JSON {type(element).__name__}; BYTES elements in "
                "JSON are strings (send other bytes as binary data)"
            )
        try:
            flat[i] = element.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, from a "\ud800" escape
            raise ProtocolError(f"BYTES element {i} is not valid Unicode") from None
    return flat


def _json_numbers(array: np.ndarray, data: list, datatype: str, dtype: np.dtype) -> np.ndarray:
    kind = array.dtype.kind
    if array.size == 0:
        return array.astype(dtype)
    if datatype == "BOOL":
        if kind != "b":
            raise ProtocolError("BOOL data must be JSON true or false")
        return array
    if dtype.kind in "iu":
        if datatype == "UINT64" and kind in "fO":  # numpy: [0, 2**64 - 1] is float64
            return _exact_uint64(data)
        if kind not in "iu":  # floats, booleans, strings, objects (a huge integer)
            raise ProtocolError(f"{datatype} data must be JSON integers")
        info = np.iinfo(dtype)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise ProtocolError(
                f"{datatype} data must lie in [{info.min}, {info.max}]; got values in "
                f"[{low}, {high}]"
            )
        return array.astype(dtype)
    if kind not in "iuf":  # FP32, FP64: any JSON number
        raise ProtocolError(f"{datatype} data must be JSON numbers")
    return array.astype(dtype)


def _exact_uint64(data: list) -> np.ndarray:
    """UINT64 data that numpy read as float64 or objects: the exact integers, if they are."""
    values = np.array(data, dtype=object).reshape(-1).tolist()
    if not all(type(v) is int for v in values):  # noqa: E721 - bool is an int subclass
        raise ProtocolError("UINT64 data must be JSON integers")
    if min(values) < 0 or max(values) > 2**64 - 1:
        raise ProtocolError("UINT64 data must lie in [0, 18446744073709551615]")
    return np.array(values, dtype=np.uint64)


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    """An array -> its binary tensor data (little-endian, row-major; BYTES length-prefixed)."""
    if datatype == "BYTES":
        return join_bytes([bytes(e) for e in array.reshape(-1)])
    return np.ascontiguousarray(array, dtype=check_datatype(datatype)).tobytes()


def to_json(array: np.ndarray, datatype: str) -> list:
    """An array -> its JSON tensor data, flat in row-major order (as Triton answers)."""
    if datatype == "BYTES":
        return [bytes(e).decode("utf-8", errors="replace") for e in array.reshape(-1)]
    return np.asarray(array, dtype=check_datatype(datatype)).reshape(-1).tolist()
