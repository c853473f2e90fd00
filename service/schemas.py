"""Response bodies of the HTTP API (they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from pydantic import BaseModel, Field


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


class Neighbor(BaseModel):
    id: str
    distance: float = Field(description="Euclidean distance between fc7 vectors")
    label: str | None
    metadata: dict


class SimilarResponse(BaseModel):
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
    labels: list[str]
    crop_size: int
    precision: str
    provider: str
    metrics: dict
    files: dict
    pictures: dict[str, str] = Field(
        default_factory=dict, description="picture name (filters, curves) -> URL of its PNG"
    )


class ModelsResponse(BaseModel):
    loaded: ModelInfo | None
    available: list[str] = Field(description="name:version of every model in the store")
