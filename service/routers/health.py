"""Liveness, readiness and metrics (the models: `routers/models.py`)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from service.deps import StateDep
from service.schemas import error_responses

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
        job = state.switcher.job if state.switcher is not None else None
        if problem is None and job is not None and job.kind == "follow" and job.state != "done":
            # another replica switched the gallery's model; /predict answers meanwhile
            problem = f"following {job.model} ({job.state}{': ' + job.error if job.error else ''})"
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
