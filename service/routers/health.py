"""Liveness, readiness, metrics and the model in use."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import store
from service.deps import StateDep
from service.schemas import ModelInfo, ModelsResponse, error_responses

router = APIRouter(tags=["operations"])


@router.get("/health/live")
async def live() -> dict:
    """The process answers."""
    return {"status": "live"}


@router.get("/health/ready", responses=error_responses(503))
async def ready(state: StateDep) -> JSONResponse:
    """200 once the model and the gallery are loaded, 503 (with Retry-After) before."""
    if state.engine is not None and state.gallery is not None:
        return JSONResponse({"status": "ready", "model": state.engine.loaded.id})
    detail = state.failure or "loading the model and the gallery"
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus text format."""
    if state.engine is not None:
        state.metrics.queue_depth.set(state.engine.queue_depth)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/models", response_model=ModelsResponse)
async def models(state: StateDep) -> ModelsResponse:
    """The model in use and what else the store holds."""
    loaded = None
    if state.engine is not None:
        lm = state.engine.loaded
        m = lm.manifest
        loaded = ModelInfo(
            id=m.id, name=m.name, version=m.version, arch=m.arch, num_classes=m.num_classes,
            labels=m.labels, crop_size=m.crop_size, precision=lm.precision, provider=lm.provider,
            metrics=m.metrics, files={k: v.model_dump() for k, v in m.files.items()},
        )  # fmt: skip
    available = [m.id for m in store.list_models(state.settings.store)]
    return ModelsResponse(loaded=loaded, available=available)
