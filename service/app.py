"""The FastAPI application: assembled here, written in the routers.

    bytes -> decode (thread) -> uint8 256x256 -> Engine (dynamic batching, onnxruntime)
          -> probs -> top-k (/predict)
          -> fc7 -> Gallery (FAISS, exact L2) (/similar, /gallery)

The model and the gallery load in the background after start-up: /health/live answers at
once, /health/ready and the model endpoints answer 503 with Retry-After until both are in.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from core import model_info
from core.model_loader import LoadedModel
from service.body_limit import BodyLimitMiddleware
from service.config import Settings, check_model_choice
from service.decode import ImageError
from service.deps import AppState, NotReadyError
from service.engine import Engine, OverloadedError
from service.gallery import GalleryUnavailableError
from service.resources import load_served_model, open_gallery
from service.routers import gallery, health, page, predict

log = logging.getLogger("service")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a client's X-Request-ID, if it is one


GALLERY_RETRY_S = 5.0  # between tries to reach a gallery database at start-up


async def open_gallery_when_reachable(state: AppState, loaded: LoadedModel) -> None:
    """Open the gallery, trying again while its database cannot be reached (/predict answers
    meanwhile; /health/ready says why it is not ready)."""
    while True:
        try:
            state.gallery = await run_in_threadpool(open_gallery, state.settings, loaded)
            return
        except GalleryUnavailableError as e:
            state.failure = f"waiting for the gallery: {e}"
            log.warning("%s; trying again in %.0f s", state.failure, GALLERY_RETRY_S)
            await asyncio.sleep(GALLERY_RETRY_S)


async def load(state: AppState) -> None:
    """Load the model and the gallery; on failure record why (shown by /health/ready)."""
    s = state.settings
    try:
        loaded = await run_in_threadpool(load_served_model, s)
        state.metrics.model.info(
            {"model": loaded.id, "precision": loaded.precision, "provider": loaded.provider}
        )
        engine = Engine(
            loaded,
            max_batch=s.max_batch,
            max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue,
            on_batch=state.metrics.observe_batch,
        )
        await engine.start()
        state.engine = engine  # /predict needs no gallery
        await open_gallery_when_reachable(state, loaded)
        state.failure = None
        state.metrics.gallery_items.set(len(state.gallery))
        log.info(
            "ready: %s (%s) on %s, knows %s; gallery %s with %d items",
            loaded.id,
            loaded.precision,
            loaded.provider,
            model_info.knows(loaded.manifest),
            state.gallery.location,
            len(state.gallery),
        )
    except Exception as e:  # noqa: BLE001 - stay up and say why in /health/ready
        state.failure = f"{type(e).__name__}: {e}"
        log.error("not ready: %s", state.failure)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = AppState(settings=settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(load(state))
        yield
        task.cancel()
        if state.engine is not None:
            await state.engine.stop()
        if state.gallery is not None:
            state.gallery.close()

    app = FastAPI(
        title="AlexNet classification and similarity service",
        description="Top-k labels and FC7 similarity search with the ten-crop AlexNet "
        "of the model store.",
        version="1.0",
        lifespan=lifespan,
    )
    app.state.alexnet = state
    app.include_router(predict.router)
    app.include_router(gallery.router)
    app.include_router(health.router)
    app.include_router(page.router)
    app.mount("/static", page.static_files(), name="static")

    # Inside `observe` (added later, so outer), which then counts and logs its 413s.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        request_id = request.headers.get("x-request-id", "")
        if not REQUEST_ID_RE.fullmatch(request_id):  # it goes into logs and a header
            request_id = uuid.uuid4().hex[:16]
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        elapsed = time.perf_counter() - start
        state.metrics.requests.labels(request.method, endpoint, str(response.status_code)).inc()
        state.metrics.latency.labels(endpoint).observe(elapsed)
        response.headers["X-Request-ID"] = request_id
        log.info(
            "request_id=%s %s %s -> %d in %.1f ms",
            request_id,
            request.method,
            request.url.path,
            response.status_code,
            1000 * elapsed,
        )
        return response

    @app.exception_handler(ImageError)
    async def image_error(_: Request, e: ImageError) -> JSONResponse:
        return JSONResponse({"detail": e.detail}, status_code=e.status_code)

    @app.exception_handler(OverloadedError)
    async def overloaded(_: Request, e: OverloadedError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"overloaded: {e}"}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(GalleryUnavailableError)
    async def gallery_unavailable(_: Request, e: GalleryUnavailableError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"gallery unavailable: {e}"}, status_code=503, headers={"Retry-After": "5"}
        )

    @app.exception_handler(NotReadyError)
    async def not_ready(_: Request, e: NotReadyError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"not ready: {e}"}, status_code=503, headers={"Retry-After": "5"}
        )

    @app.exception_handler(405)
    async def method_not_allowed(request: Request, e: HTTPException) -> JSONResponse:
        # Starlette's Allow names only the methods of the first route with this path, but
        # /gallery and /gallery/{item_id} each have two: take them from the OpenAPI paths.
        allow = (e.headers or {}).get("Allow", "")
        for template, operations in app.openapi()["paths"].items():
            if compile_path(template)[0].fullmatch(request.url.path):
                allow = ", ".join(sorted(method.upper() for method in operations))
        return JSONResponse(
            {"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": allow}
        )

    return app


def run(settings: Settings) -> None:
    """Serve the app with uvicorn until stopped (SIGINT/SIGTERM: a graceful shutdown).

    Raises:
        FileNotFoundError: before anything starts, when the store holds several models and
            the settings name none (`check_model_choice`).
    """
    import uvicorn

    check_model_choice(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=10,
    )
