"""The served model as a v2 model: its name and version, its metadata, and a request's inputs
turned into the engine's pixels under the service's limits.

Two inputs, one of which a request sends:
    images       UINT8 [N, 256, 256, 3]  the contract's input (already "shorter side to 256,
                                         central 256x256"), passed to the engine as it is
    image_bytes  BYTES [N]               encoded image files, decoded by the service exactly
                                         as /predict decodes uploads (same limits, same codes)
Two outputs: probs FP32 [N, K] and fc7 FP32 [N, 4096], both unless the request names some.
"""

from __future__ import annotations

import re

import numpy as np
from starlette.concurrency import run_in_threadpool

from core import constants as C
from core.store import Manifest
from service.config import Settings
from service.metrics import Metrics
from service.oip import tensors
from service.oip.codec import Input, Output, Request
from service.oip.errors import ProtocolError
from service.oip.messages import ModelMetadata, TensorMetadata
from service.uploads import check_image_count, decode_images

PLATFORM = "onnxruntime_onnx"
IMAGES, IMAGE_BYTES = C.INPUT_NAME, "image_bytes"
IMAGE_SHAPE = (C.IMAGE_SIZE, C.IMAGE_SIZE, 3)
PROBS, FC7 = C.OUTPUT_NAMES
OUTPUT_DATATYPE = "FP32"
DATATYPE_OF = {"uint8": "UINT8", "float32": "FP32"}  # the manifest's dtypes
JSON_BYTES_PER_VALUE = 8  # "255, " and a little layout: bounds the JSON of the largest request
VERSION_RE = re.compile(r"[0-9]{1,18}")
INPUTS_TEXT = (
    f"'{IMAGES}' (UINT8 [N,{C.IMAGE_SIZE},{C.IMAGE_SIZE},3]) or '{IMAGE_BYTES}' (BYTES [N])"
)


def check_model(manifest: Manifest, name: str, version: str | None = None) -> None:
    """404 unless `name` (and `version`, if given) are those of the model being served."""
    if name != manifest.name:
        raise ProtocolError(
            f"unknown model {name!r}; this server serves {manifest.name!r} "
            f"(version {manifest.version})",
            status_code=404,
        )
    if version is not None and not (
        VERSION_RE.fullmatch(version) and int(version) == manifest.version
    ):
        raise ProtocolError(
            f"version {version!r} of model {name!r} is not loaded; the loaded version is "
            f"{manifest.version}",
            status_code=404,
        )


def _metadata(name: str, dtype: str, shape: list[int | str]) -> TensorMetadata:
    return TensorMetadata(
        name=name,
        datatype=DATATYPE_OF[dtype],
        shape=[-1 if isinstance(d, str) else d for d in shape],
    )


def model_metadata(manifest: Manifest) -> ModelMetadata:
    """The model's metadata: the manifest's tensors (-1 for the batch) and `image_bytes`."""
    return ModelMetadata(
        name=manifest.name,
        versions=[str(manifest.version)],
        platform=PLATFORM,
        inputs=[
            *(_metadata(t.name, t.dtype, t.shape) for t in manifest.inputs),
            TensorMetadata(name=IMAGE_BYTES, datatype="BYTES", shape=[-1]),
        ],
        outputs=[_metadata(t.name, t.dtype, t.shape) for t in manifest.outputs],
    )


def max_json_bytes(settings: Settings) -> int:
    """The largest JSON part accepted: `images` of max_images_per_request images as JSON."""
    values = settings.max_images_per_request * int(np.prod(IMAGE_SHAPE))
    return JSON_BYTES_PER_VALUE * values + 65_536


def _one_input(request: Request) -> Input:
    names = list(request.inputs)
    unknown = [n for n in names if n not in (IMAGES, IMAGE_BYTES)]
    if unknown:
        raise ProtocolError(f"unknown input {unknown[0]!r}; the model takes {INPUTS_TEXT}")
    if len(names) != 1:
        raise ProtocolError(f"send one input, {INPUTS_TEXT}; not both")
    return request.inputs[names[0]]


def _check_batch(name: str, shape: list[int], settings: Settings) -> None:
    tensors.check_shape(shape)
    if not shape or shape[0] < 1:
        raise ProtocolError(f"input {name!r} of shape {shape} holds no image")
    check_image_count(shape[0], settings)  # 413, as for /predict


async def pixels(request: Request, settings: Settings, metrics: Metrics) -> np.ndarray:
    """The request's images as the engine's input: uint8 (N, 256, 256, 3).

    Raises:
        ProtocolError: 400 a missing, unknown or second input, a wrong datatype or shape,
            data that does not fit them.
        ImageError: 413 more than max_images_per_request images, or an image_bytes element
            over the byte or pixel limit; 415 not an image; 422 a corrupt one; 400 empty.
    """
    item = _one_input(request)
    spec = item.spec
    where = f"input {spec.name!r}"
    if spec.name == IMAGES:
        if spec.datatype != "UINT8":
            raise ProtocolError(f"{where} has datatype {spec.datatype}; it takes UINT8")
        if len(spec.shape) != 4 or tuple(spec.shape[1:]) != IMAGE_SHAPE:
            raise ProtocolError(
                f"{where} has shape {spec.shape}; it takes [N,{C.IMAGE_SIZE},{C.IMAGE_SIZE},3]"
            )
        _check_batch(spec.name, spec.shape, settings)
        return await run_in_threadpool(item.array)  # JSON data: a loop over every value
    if spec.datatype != "BYTES":
        raise ProtocolError(f"{where} has datatype {spec.datatype}; it takes BYTES")
    if len(spec.shape) != 1:
        raise ProtocolError(f"{where} has shape {spec.shape}; it takes [N]")
    _check_batch(spec.name, spec.shape, settings)
    files = [bytes(f) for f in await run_in_threadpool(item.array)]
    return (await decode_images(files, settings, metrics)).pixels


def requested_outputs(request: Request) -> list[tuple[str, bool]]:
    """(name, as binary) of each output to answer: those named, or all of them."""
    if request.outputs is None:
        return [(PROBS, request.binary_output), (FC7, request.binary_output)]
    for name, _ in request.outputs:
        if name not in (PROBS, FC7):
            raise ProtocolError(f"unknown output {name!r}; the model has {PROBS!r} and {FC7!r}")
    return request.outputs


def outputs(requested: list[tuple[str, bool]], probs: np.ndarray, fc7: np.ndarray) -> list[Output]:
    arrays = {PROBS: probs, FC7: fc7}
    return [Output(name, OUTPUT_DATATYPE, arrays[name], binary) for name, binary in requested]
