"""Liveness, readiness, metrics and the model in use."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from core import model_info, store
from service.deps import StateDep
from service.schemas import ModelInfo, ModelsResponse, error_responses

router = APIRouter(tags=["operations"])


@router.get("/health/live")
async def live() -> dict:
    """The process answers."""
    return {"status": "live"}


@router.get("/health/ready", responses=error_responses(503))
async def ready(state: StateDep) -> JSONResponse:
    """200 once the model and the gallery are loaded, 503 (with Retry-After) before. Once
    ready it stays so while a gallery database is unreachable (/predict still answers; the
    gallery endpoints answer 503): `gallery` then says why."""
    if state.engine is not None and state.gallery is not None:
        problem = await run_in_threadpool(state.gallery.problem)
        return JSONResponse({
            "status": "ready", "model": state.engine.loaded.id,
            "gallery": "ok" if problem is None else f"unavailable: {problem}",
        })  # fmt: skip
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
    """The model in use (with `knows`: what it tells apart, in words) and what else the
    store holds."""
    loaded = None
    if state.engine is not None:
        lm = state.engine.loaded
        m = lm.manifest
        loaded = ModelInfo(
            id=m.id, name=m.name, version=m.version, arch=m.arch, num_classes=m.num_classes,
            knows=model_info.knows(m), hint=model_info.real_labels_hint(m), labels=m.labels,
            crop_size=m.crop_size, precision=lm.precision, provider=lm.provider,
            metrics=m.metrics, files={k: v.model_dump() for k, v in m.files.items()},
            pictures={k: f"/models/pictures/{k}" for k in m.pictures},
        )  # fmt: skip
    available = [m.id for m in store.list_models(state.settings.store)]
    return ModelsResponse(loaded=loaded, available=available)


@router.get(
    "/models/pictures/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "no such picture"}},
)
async def picture(state: StateDep, name: Annotated[str, Path(max_length=64)]) -> FileResponse:
    """A picture of the model in use: `filters` (conv1 kernels) or `curves` (its training)."""
    if state.engine is None:
        raise HTTPException(404, "no model is loaded")
    lm = state.engine.loaded
    entry = lm.manifest.pictures.get(name)
    if entry is None:
        known = ", ".join(lm.manifest.pictures) or "none"
        raise HTTPException(404, f"{lm.manifest.id} has no picture {name!r} (it has: {known})")
    # the manifest names a file inside the version folder, never a path
    return FileResponse(lm.folder / PurePath(entry.file).name, media_type="image/png")
