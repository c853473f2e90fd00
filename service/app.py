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
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from core import model_info
from core.model_loader import LoadedModel
from service.body_limit import BodyLimitMiddleware
from service.config import Settings, check_model_choice
from service.decode import ImageError
from service.deps import AppState, NotReadyError
from service.engine import NonFiniteOutputError, OverloadedError
from service.gallery import GalleryModelChangedError, GalleryUnavailableError
from service.model_switch import ModelSwitcher, open_served_gallery
from service.observe import ObserveMiddleware
from service.oip.errors import error_body, is_protocol_path
from service.resources import load_served_model, start_engine
from service.routers import gallery, health, models, oip, page, predict
from service.uploads import keep_parts_in_memory

log = logging.getLogger("service")


GALLERY_RETRY_S = 5.0  # between tries to reach a gallery database at start-up
# Swagger UI's and ReDoc's scripts and styles, served from the fastapi-offline package (no CDN)
DOCS_ASSETS = "/docs-assets"


async def open_gallery_when_reachable(state: AppState, loaded: LoadedModel) -> None:
    """Open the gallery, trying again while its database cannot be reached (/predict answers
    meanwhile; /health/ready says why it is not ready)."""
    while True:
        try:
            state.gallery = await run_in_threadpool(open_served_gallery, state.settings, loaded)
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
        state.metrics.serving(loaded.id, loaded.precision, loaded.provider)
        state.engine = await start_engine(loaded, s, state.metrics)  # /predict needs no gallery
        await open_gallery_when_reachable(state, loaded)
        state.failure = None
        if state.switcher is not None:  # follow a model switch made by another replica
            follow = asyncio.create_task(state.switcher.follow_forever(), name="model-follow")
            state.background.add(follow)
        state.metrics.gallery_items.set(len(state.gallery))
        log.info(  # where the model runs was said when it loaded (core.model_loader)
            "ready: %s (%s; %d engine call(s) at once, up to %d images each), knows %s; "
            "gallery %s with %d items",
            loaded.id,
            loaded.precision,
            s.instances,
            s.max_batch,
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
    state.switcher = ModelSwitcher(state)
    keep_parts_in_memory()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(load(state))
        yield
        task.cancel()
        for background in state.background:
            background.cancel()
        await state.switcher.close()
        if state.engine is not None:
            await state.engine.stop()
        if state.gallery is not None:
            state.gallery.close()

    # /docs (Swagger UI) and /redoc load their scripts from DOCS_ASSETS, not from a CDN, so
    # they work on a machine without internet.
    app = FastAPIOffline(
        title="AlexNet classification and similarity service",
        description="Top-k labels and FC7 similarity search with the ten-crop AlexNet "
        "of the model store.",
        version="1.0",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        favicon_url="/static/favicon.svg",
    )
    app.state.alexnet = state
    app.include_router(predict.router)
    app.include_router(gallery.router)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(page.router)
    app.include_router(oip.router)
    app.mount("/static", page.static_files(), name="static")

    # Inside ObserveMiddleware (added later, so outer), which then counts and logs its 413s.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)

    # Outermost of ours: it counts and logs the body limit's 413s too.
    app.add_middleware(ObserveMiddleware, metrics=state.metrics, routes=app.router.routes)

    @app.exception_handler(ImageError)
    async def image_error(_: Request, e: ImageError) -> JSONResponse:
        return JSONResponse({"detail": e.detail}, status_code=e.status_code)

    @app.exception_handler(NonFiniteOutputError)
    async def non_finite(_: Request, e: NonFiniteOutputError) -> JSONResponse:
        log.error("model error: %s", e)
        return JSONResponse({"detail": f"model error: {e}"}, status_code=500)

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

    @app.exception_handler(GalleryModelChangedError)
    async def gallery_model_changed(_: Request, e: GalleryModelChangedError) -> JSONResponse:
        # Another replica switched the gallery to another model; this one is loading it.
        return JSONResponse(
            {"detail": f"the gallery switched models; this replica is following: {e}"},
            status_code=503,
            headers={"Retry-After": "2"},
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
            error_body(request.url.path, "Method Not Allowed"),
            status_code=405,
            headers={"Allow": allow},
        )

    @app.exception_handler(404)
    async def not_found(request: Request, e: HTTPException) -> JSONResponse:
        # FastAPI's own answer, but with the protocol's error body under /v2
        path = request.url.path
        body = {"error": str(e.detail)} if is_protocol_path(path) else {"detail": e.detail}
        return JSONResponse(body, status_code=404, headers=e.headers)

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
