"""The protocol's JSON objects as pydantic models: what a request may hold, what is answered.

They validate the JSON part of an inference request (strictly: a shape of `[1, "2"]` or
`[true]` is refused, not coerced) and describe every body in the OpenAPI schema. Tensor
`data` is left as parsed JSON here; `service.oip.tensors` converts it once the datatype
and shape are known to fit.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

Parameters = dict[str, Any]


class RequestInput(BaseModel):
    """`$request_input`: one input tensor, its data in JSON or (binary_data_size) after it."""

    model_config = ConfigDict(strict=True)

    name: str
    shape: list[StrictInt] = Field(description="dimensions, row-major")
    datatype: str = Field(description="UINT8, BYTES, FP32, ...")
    parameters: Parameters = Field(
        default_factory=dict,
        description='{"binary_data_size": n}: the data is the next n bytes of the binary part',
    )
    data: Any = Field(
        None,
        description="the elements in row-major order, flat or nested (absent for binary data)",
        json_schema_extra={"type": "array", "items": {}},
    )


class RequestOutput(BaseModel):
    """`$request_output`: an output to return, as JSON or (binary_data) binary data."""

    model_config = ConfigDict(strict=True)

    name: str
    parameters: Parameters = Field(
        default_factory=dict, description='{"binary_data": true}: return it as binary data'
    )


class InferenceRequest(BaseModel):
    """`$inference_request`."""

    model_config = ConfigDict(strict=True)

    id: StrictStr | None = Field(None, description="echoed in the response")
    parameters: Parameters = Field(
        default_factory=dict,
        description='{"binary_data_output": true}: outputs without their own binary_data '
        "parameter are returned as binary data",
    )
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(
        None, description="the outputs to return (default: all)"
    )


class ResponseOutput(BaseModel):
    """`$response_output`: `data` in JSON, or `parameters.binary_data_size` binary bytes."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, StrictInt] | None = Field(
        None, description='{"binary_data_size": n} when the data is binary'
    )
    data: list[float] | None = Field(None, description="the elements, flat, row-major")


class InferenceResponse(BaseModel):
    """`$inference_response`."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    """`$metadata_tensor`: -1 marks a dimension of any size (the batch)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """`$metadata_model_response`."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    """`$metadata_server_response`."""

    name: str
    version: str
    extensions: list[str]


class ProtocolErrorBody(BaseModel):
    """Every error answer of the protocol's endpoints."""

    error: str
