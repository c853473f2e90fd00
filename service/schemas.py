"""Response bodies of the HTTP API (they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.gallery import Neighbor


class Error(BaseModel):
    """Every error answer (4xx, 503)."""

    detail: str | list[dict[str, Any]] = Field(
        description="what was wrong: a message, or FastAPI's list of invalid request fields"
    )


ERRORS = {
    400: "an empty file, or a multipart body that cannot be parsed",
    401: "a missing or wrong API key (gallery writes, when ALEXNET_API_KEY is set)",
    404: "no gallery item with this id",
    409: "a model switch is already running, or the model asked for is the one in use",
    413: "too large: an image's bytes or pixels, the number of images, the metadata, the body",
    415: "not an image, or not an accepted format",
    422: "an invalid request field, a truncated or corrupt image, or invalid metadata",
    500: "the model gave NaN or infinite outputs for an image (its arithmetic overflowed); "
    "nothing was stored",
    503: "the model or the gallery is not loaded yet, or the engine's queue is full",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route for the error codes it can answer, for the OpenAPI schema."""
    return {
        code: {"model": Error, "description": ERRORS[code]}
        | ({"headers": RETRY_AFTER} if code == 503 else {})
        for code in codes
    }


class Prediction(BaseModel):
    label: str
    index: int
    probability: float


class Result(BaseModel):
    predictions: list[Prediction] = Field(description="top_k classes, most probable first")
    embedding: list[float] | None = Field(None, description="the 4096-d fc7 vector, if asked")


class PredictResponse(BaseModel):
    model: str = Field(description="name:version")
    results: list[Result] = Field(description="one per uploaded image, in upload order")


class SimilarResponse(BaseModel):
    # The gallery's own dataclass: pydantic serialises it and describes it in the schema.
    neighbors: list[Neighbor] = Field(description="nearest first")


class ItemRef(BaseModel):
    id: str


class AddResponse(BaseModel):
    items: list[ItemRef]


class GalleryItem(BaseModel):
    id: str
    label: str | None
    metadata: dict
    created_at: str
    image_url: str


class GalleryPage(BaseModel):
    items: list[GalleryItem]
    total: int
    offset: int
    limit: int


class ModelInfo(BaseModel):
    id: str
    name: str
    version: int
    arch: str
    num_classes: int
    knows: str = Field(
        description='what the model tells apart, in words: "1000 ImageNet classes" or its '
        'classes by name ("6 classes: checkerboard, circle, ...")'
    )
    hint: str | None = Field(
        None,
        description="for the built-in synthetic default: what it is and the command that "
        "gives real ImageNet labels; null for other models",
    )
    labels: list[str]
    crop_size: int
    precision: str
    provider: str
    metrics: dict
    files: dict
    pictures: dict[str, str] = Field(
        default_factory=dict, description="picture name (filters, curves) -> URL of its PNG"
    )


class SwitchRequest(BaseModel):
    """POST /models/switch: the model to switch to."""

    model: str = Field(
        min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(:[0-9]{1,9})?$",
        description="NAME[:VERSION] of a model in the store (the latest version if none)",
        examples=["tiny:2"],
    )  # fmt: skip
    precision: Literal["auto", "fp32", "fp16", "int8"] | None = Field(
        None, description="which file of it (default: ALEXNET_PRECISION)"
    )


class SwitchStatus(BaseModel):
    """A model being prepared (or the last one that failed)."""

    model: str = Field(description="NAME:VERSION being prepared")
    precision: str = Field(description="as asked (auto, fp32, fp16, int8)")
    model_id: str | None = Field(
        description="name:version/precision of the file loaded, once loaded"
    )
    kind: Literal["switch", "follow"] = Field(
        description="switch: asked for here; follow: another replica switched the shared "
        "gallery, this one loads the same model"
    )
    state: Literal["loading", "re-embedding", "switching", "done", "failed"]
    done: int = Field(description="gallery items embedded by the new model so far")
    total: int = Field(description="gallery items it must embed (grows with items added meanwhile)")
    eta_s: float | None = Field(description="seconds left for the re-embedding, estimated")
    error: str | None = Field(description="why it failed (the old model kept serving)")
    started_at: str
    finished_at: str | None


class ModelsResponse(BaseModel):
    loaded: ModelInfo | None
    available: list[str] = Field(description="name:version of every model in the store")
    preparing: SwitchStatus | None = Field(
        None,
        description="the model being prepared beside the loaded one (POST /models/switch, or "
        "following another replica), or the last switch if it failed; null otherwise",
    )
