"""An inference request's body -> its inputs and requested outputs; outputs -> a response body.

The body is one JSON object (`$inference_request`), or, with the binary tensor data
extension, that JSON object followed by the inputs' binary data: the header
`Inference-Header-Content-Length` gives the JSON object's size, and each input sent as
binary names its byte count in `parameters.binary_data_size`, the inputs' data following
each other in the order the inputs are listed. The answer is built the same way.

Nothing here knows the model: input and output names are checked by `service.oip.model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from service.oip import tensors
from service.oip.errors import ProtocolError
from service.oip.messages import InferenceRequest, Parameters, RequestInput

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"

# Parameters that name features this server does not have: refused rather than ignored.
UNSUPPORTED_PARAMETERS = {
    "classification": "the classification extension is not supported",
    "shared_memory_region": "the shared-memory extensions are not supported",
    "shared_memory_byte_size": "the shared-memory extensions are not supported",
    "shared_memory_offset": "the shared-memory extensions are not supported",
}


@dataclass
class Input:
    """One input of a request: its JSON description and, if sent so, its binary data."""

    spec: RequestInput
    binary: bytes | None  # None: the data is the JSON `data`

    @property
    def name(self) -> str:
        return self.spec.name

    def array(self) -> np.ndarray:
        """The input's data as an array of its datatype and shape (checked here)."""
        s = self.spec
        if self.binary is not None:
            return tensors.from_binary(self.binary, s.datatype, s.shape)
        return tensors.from_json(s.data, s.datatype, s.shape)


@dataclass
class Request:
    """A parsed inference request."""

    id: str | None
    inputs: dict[str, Input]  # by name, in the request's order
    outputs: list[tuple[str, bool]] | None  # (name, as binary) in the request's order; None: all
    binary_output: bool  # the request's binary_data_output: for outputs not named


@dataclass
class Output:
    """One output to answer."""

    name: str
    datatype: str
    array: np.ndarray
    binary: bool


def flag(parameters: Parameters, name: str, where: str) -> bool:
    """A boolean parameter (absent: false); anything but a JSON boolean is refused."""
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}: parameter {name!r} must be true or false, not {value!r}")
    return value


def check_supported(parameters: Parameters, where: str) -> None:
    for name, why in UNSUPPORTED_PARAMETERS.items():
        if name in parameters:
            raise ProtocolError(f"{where}: parameter {name!r}: {why}")


def header_length(value: str | None) -> int | None:
    """The value of Inference-Header-Content-Length (None: absent): a decimal integer."""
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise ProtocolError(f"{HEADER_LENGTH} must be a decimal number of bytes, not {value!r}")
    return int(value)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise ProtocolError(f"the request's JSON is not UTF-8: {e}") from None
    except RecursionError:
        raise ProtocolError("the request's JSON is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, NaN/Infinity, an integer of 4300+ digits
        raise ProtocolError(f"the request's JSON is not valid: {e}") from None


def _validation_message(e: ValidationError) -> str:
    problems = []
    for error in e.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "the request"
        problems.append(f"{where}: {error['msg']}")
    return "the inference request is not valid: " + "; ".join(problems)


def parse_request(body: bytes, json_length: int | None, *, max_json_bytes: int) -> Request:
    """Split and check an inference request's body.

    Args:
        body: the whole request body.
        json_length: Inference-Header-Content-Length (None: the body is all JSON).
        max_json_bytes: the JSON part's limit (413 beyond it).

    Raises:
        ProtocolError: 400 for anything malformed, 413 for JSON over the limit.
    """
    if json_length is None:
        json_length = len(body)
    elif json_length > len(body):
        raise ProtocolError(
            f"{HEADER_LENGTH} is {json_length}, but the body is only {len(body)} bytes"
        )
    if json_length > max_json_bytes:
        raise ProtocolError(
            f"the request's JSON is {json_length} bytes; the limit is {max_json_bytes} "
            "(send large tensors as binary data)",
            status_code=413,
        )
    document = _load_json(body[:json_length])
    if not isinstance(document, dict):
        raise ProtocolError("the inference request must be a JSON object")
    try:
        request = InferenceRequest.model_validate(document)
    except ValidationError as e:
        raise ProtocolError(_validation_message(e)) from None
    binary_output = flag(request.parameters, "binary_data_output", "the request")
    return Request(
        id=request.id,
        inputs=_inputs(request.inputs, body[json_length:]),
        outputs=_outputs(request, binary_output),
        binary_output=binary_output,
    )


def _inputs(specs: list[RequestInput], binary: bytes) -> dict[str, Input]:
    """Each input with its share of the binary part, which the inputs must use up exactly."""
    inputs: dict[str, Input] = {}
    offset = 0
    for spec in specs:
        where = f"input {spec.name!r}"
        if spec.name in inputs:
            raise ProtocolError(f"{where} is given twice")
        check_supported(spec.parameters, where)
        size = spec.parameters.get("binary_data_size")
        if size is None:
            if spec.data is None:
                raise ProtocolError(f"{where} has neither 'data' nor a binary_data_size")
            inputs[spec.name] = Input(spec, None)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ProtocolError(f"{where}: binary_data_size must be an integer >= 0, not {size!r}")
        if spec.data is not None:
            raise ProtocolError(f"{where} has both 'data' and a binary_data_size")
        if offset + size > len(binary):
            raise ProtocolError(
                f"{where}: binary_data_size {size} runs past the end of the binary data "
                f"({len(binary) - offset} bytes left of {len(binary)})"
            )
        inputs[spec.name] = Input(spec, binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise ProtocolError(
            f"the binary data is {len(binary)} bytes, but the inputs' binary_data_size add up "
            f"to {offset}"
        )
    return inputs


def _outputs(request: InferenceRequest, binary_output: bool) -> list[tuple[str, bool]] | None:
    if not request.outputs:
        return None
    outputs: list[tuple[str, bool]] = []
    for spec in request.outputs:
        where = f"output {spec.name!r}"
        if any(name == spec.name for name, _ in outputs):
            raise ProtocolError(f"{where} is requested twice")
        check_supported(spec.parameters, where)
        binary = (
            flag(spec.parameters, "binary_data", where)
            if "binary_data" in spec.parameters
            else binary_output
        )
        outputs.append((spec.name, binary))
    return outputs


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: list[Output]
) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the JSON part's length (the value
    of Inference-Header-Content-Length; the body is then not JSON but JSON + binary data)."""
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    described, blobs = [], []
    for out in outputs:
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": out.datatype,
            "shape": list(out.array.shape),
        }
        if out.binary:
            blob = tensors.to_binary(out.array, out.datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensors.to_json(out.array, out.datatype)
        described.append(entry)
    header["outputs"] = described
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if not blobs:
        return encoded, None
    return b"".join([encoded, *blobs]), len(encoded)
