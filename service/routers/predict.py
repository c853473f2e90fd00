"""POST /predict: top-k labels (and fc7 on request) for one or more images."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Query, UploadFile

from service.deps import EngineDep, SettingsDep, StateDep, current_engine
from service.schemas import Prediction, PredictResponse, Result, error_responses
from service.uploads import read_images

router = APIRouter(tags=["predict"])


def top_k(probs: np.ndarray, labels: list[str], k: int) -> list[Prediction]:
    """The k most probable classes of one probability row, most probable first."""
    k = min(k, len(probs))
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(label=labels[i], index=int(i), probability=float(probs[i])) for i in order]


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=error_responses(400, 413, 415, 422, 500, 503),
)
async def predict(
    state: StateDep,
    engine: EngineDep,
    settings: SettingsDep,
    image: Annotated[
        list[UploadFile], File(min_length=1, description="one or more images (repeat the part)")
    ],
    top_k_: Annotated[int, Query(alias="top_k", ge=1, le=1000, description="labels per image")] = 5,
    embedding: Annotated[bool, Query(description="also return the 4096-d fc7 vector")] = False,
) -> PredictResponse:
    uploads = await read_images(image, settings, state.metrics)
    engine = current_engine(state, engine)  # a model switch may have happened meanwhile
    probs, fc7 = await engine.infer(uploads.pixels)
    labels = engine.loaded.manifest.labels
    results = [
        Result(predictions=top_k(p, labels, top_k_), embedding=f.tolist() if embedding else None)
        for p, f in zip(probs, fc7, strict=True)
    ]
    return PredictResponse(model=engine.loaded.id, results=results)
