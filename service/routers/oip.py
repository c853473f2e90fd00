"""The Open Inference Protocol (KServe v2 REST, as Triton serves it) over the same engine.

    GET  /v2                                             server metadata
    GET  /v2/health/live, /v2/health/ready               200, or 503 while no model is loaded
    GET  /v2/models/{name}[/versions/{v}]                model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready          200 when that model is loaded
    POST /v2/models/{name}[/versions/{v}]/infer          JSON or JSON + binary tensors

The model is the one being served: its name is the store name, its version the store version
(read from the engine of each request). Inference goes through the engine's batcher with
/predict's requests, under the same limits. Every error is `{"error": ...}`: 400 a malformed
request or tensor, 404 an unknown model or version, 413 over a limit, 415 not an image (or a
compressed body), 422 a corrupt image, 500 NaN or infinite model outputs, 503 not ready or
overloaded (with Retry-After).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from service.decode import ImageError
from service.deps import EngineDep, NotReadyError, SettingsDep, StateDep, current_engine
from service.engine import NonFiniteOutputError, OverloadedError
from service.oip import codec, model
from service.oip.errors import ProtocolError
from service.oip.messages import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ProtocolErrorBody,
    ServerMetadata,
)

log = logging.getLogger("service")

SERVER_NAME = "alexnet-service"
EXTENSIONS = ["binary_tensor_data"]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ProtocolRoute(APIRoute):
    """A route whose every refusal is the protocol's `{"error": ...}`, including those raised
    before the handler runs (no engine yet, an invalid header) and the body limit's 413."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def protocol_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ProtocolError as e:
                return _error(e.status_code, e.message)
            except ImageError as e:
                return _error(e.status_code, e.detail)
            except OverloadedError as e:
                return _error(503, f"overloaded: {e}", {"Retry-After": "1"})
            except NonFiniteOutputError as e:
                log.error("model error: %s", e)
                return _error(500, f"model error: {e}")
            except NotReadyError as e:
                return _error(503, f"not ready: {e}", {"Retry-After": "5"})
            except RequestValidationError as e:
                return _error(400, "; ".join(str(err.get("msg", err)) for err in e.errors()))
            except HTTPException as e:  # the body limit's 413, raised while the body is read
                return _error(e.status_code, str(e.detail), e.headers)

        return protocol_handler


router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=ProtocolRoute)

ERRORS = {
    400: "a malformed request: its JSON, a tensor's datatype, shape or data, the binary "
    "data's sizes, an unknown input or output",
    404: "no such model, or not this version",
    413: "too large: the number of images, an image's bytes or pixels, the JSON, the body",
    415: "an image_bytes element that is not an image or not an accepted format, or a "
    "compressed request body",
    422: "an image_bytes element that is truncated or corrupt",
    500: "the model gave NaN or infinite outputs for an image (its arithmetic overflowed)",
    503: "no model loaded yet, or the engine's queue is full",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
NO_CONTENT = {"description": "yes (no body)", "content": {}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": ProtocolErrorBody, "description": ERRORS[code]}
        | ({"headers": RETRY_AFTER} if code == 503 else {})
        for code in codes
    }


ModelName = Annotated[str, Path(description="the store name of the served model")]
ModelVersion = Annotated[str, Path(description="the store version of the served model")]


def _server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:
        return "unknown"


@router.get("", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    """The server's name, version and the protocol extensions it implements."""
    return ServerMetadata(name=SERVER_NAME, version=_server_version(), extensions=EXTENSIONS)


@router.get("/health/live", response_class=Response, responses={200: NO_CONTENT})
async def live() -> Response:
    """200 while the process answers."""
    return Response(status_code=200)


@router.get("/health/ready", response_class=Response, responses={200: NO_CONTENT} | errors(503))
async def ready(state: StateDep) -> Response:
    """200 once the model is loaded and inference requests are answered (the gallery, which
    the protocol does not use, is not waited for: /health/ready does that)."""
    if state.engine is None:
        raise NotReadyError(state.failure or "the model is still loading")
    return Response(status_code=200)


@router.get("/models/{model_name}", response_model=ModelMetadata, responses=errors(404, 503))
async def model_metadata(engine: EngineDep, model_name: ModelName) -> ModelMetadata:
    """The model's versions (the loaded one), platform, inputs and outputs."""
    manifest = engine.loaded.manifest
    model.check_model(manifest, model_name)
    return model.model_metadata(manifest)


@router.get(
    "/models/{model_name}/versions/{model_version}",
    response_model=ModelMetadata,
    responses=errors(404, 503),
)
async def version_metadata(
    engine: EngineDep, model_name: ModelName, model_version: ModelVersion
) -> ModelMetadata:
    """The same, for one version (only the loaded version is known)."""
    manifest = engine.loaded.manifest
    model.check_model(manifest, model_name, model_version)
    return model.model_metadata(manifest)


@router.get(
    "/models/{model_name}/ready",
    response_class=Response,
    responses={200: NO_CONTENT} | errors(404, 503),
)
async def model_ready(engine: EngineDep, model_name: ModelName) -> Response:
    """200 when this model is loaded and answers inference requests."""
    model.check_model(engine.loaded.manifest, model_name)
    return Response(status_code=200)


@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    response_class=Response,
    responses={200: NO_CONTENT} | errors(404, 503),
)
async def version_ready(
    engine: EngineDep, model_name: ModelName, model_version: ModelVersion
) -> Response:
    """200 when this version of the model is loaded and answers inference requests."""
    model.check_model(engine.loaded.manifest, model_name, model_version)
    return Response(status_code=200)


def _inline_refs(schema: dict) -> dict:
    """A pydantic JSON schema with its `$defs` written in place (an OpenAPI request body
    cannot point into a schema's own `$defs`)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


BINARY_BODY = (
    "The binary tensor data extension: the inference request's JSON object, then the data of "
    "every input whose parameters hold binary_data_size, in the order of the inputs, each "
    "exactly that many bytes (little-endian, row-major; a BYTES element is a 4-byte "
    "little-endian length, then its bytes). The header Inference-Header-Content-Length gives "
    "the JSON object's size. Not JSON: the schema cannot say more than 'bytes'."
)
INFER_OPENAPI = {
    "parameters": [
        {
            "name": codec.HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "bytes of the JSON object at the start of the body (binary tensor "
            "data extension); absent: the body is all JSON",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_refs(InferenceRequest.model_json_schema())},
            codec.BINARY_MEDIA_TYPE: {
                "schema": {"type": "string", "format": "binary", "description": BINARY_BODY}
            },
        },
    },
}
INFER_RESPONSES = {
    200: {
        "model": InferenceResponse,
        "description": "the outputs; JSON, or, when an output is returned as binary data, "
        "the JSON object followed by their bytes (see the header)",
        "headers": {
            codec.HEADER_LENGTH: {
                "description": "bytes of the JSON object at the start of the body, when some "
                "output is binary data",
                "schema": {"type": "integer"},
            }
        },
        "content": {
            codec.BINARY_MEDIA_TYPE: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "the response's JSON object (Inference-Header-Content-Length "
                    "bytes), then the data of every output whose parameters hold "
                    "binary_data_size, in the order of the outputs",
                }
            }
        },
    }
} | errors(400, 404, 413, 415, 422, 500, 503)


async def _infer(
    request: Request,
    state: StateDep,
    engine: EngineDep,
    settings: SettingsDep,
    name: str,
    version: str | None,
) -> Response:
    """Check the model, parse the body, decode the images, run the engine, encode."""
    manifest = engine.loaded.manifest
    model.check_model(manifest, name, version)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ProtocolError(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed", 415
        )
    json_length = codec.header_length(request.headers.get(codec.HEADER_LENGTH))
    body = await request.body()
    parsed = await run_in_threadpool(  # up to megabytes of JSON: not on the event loop
        codec.parse_request, body, json_length, max_json_bytes=model.max_json_bytes(settings)
    )
    requested = model.requested_outputs(parsed)
    pixels = await model.pixels(parsed, settings, state.metrics)
    # A model switch may have happened while the body was read: the model in use now answers
    # if it is the one addressed (a version no longer loaded is 404), with no await between
    engine = current_engine(state, engine)
    manifest = engine.loaded.manifest
    model.check_model(manifest, name, version)
    probs, fc7 = await engine.infer(pixels)
    content, header_length = await run_in_threadpool(  # JSON outputs: 4096 floats an image
        codec.encode_response,
        manifest.name,
        str(manifest.version),
        parsed.id,
        model.outputs(requested, probs, fc7),
    )
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type=codec.BINARY_MEDIA_TYPE,
        headers={codec.HEADER_LENGTH: str(header_length)},
    )


@router.post(
    "/models/{model_name}/infer",
    response_class=Response,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_OPENAPI,
)
async def infer(
    request: Request,
    state: StateDep,
    engine: EngineDep,
    settings: SettingsDep,
    model_name: ModelName,
) -> Response:
    """Run the model on `images` (UINT8 [N,256,256,3]) or `image_bytes` (BYTES [N], encoded
    image files); answer `probs` (FP32 [N,K]) and/or `fc7` (FP32 [N,4096])."""
    return await _infer(request, state, engine, settings, model_name, None)


@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    response_class=Response,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_OPENAPI,
)
async def version_infer(
    request: Request,
    state: StateDep,
    engine: EngineDep,
    settings: SettingsDep,
    model_name: ModelName,
    model_version: ModelVersion,
) -> Response:
    """The same, for one version (only the loaded version is known)."""
    return await _infer(request, state, engine, settings, model_name, model_version)
