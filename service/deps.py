"""Dependencies of the routers, as Annotated aliases.

They are `async def` although they never wait: FastAPI runs a plain `def` dependency in
its thread pool, a thread hop per dependency per request (about 0.5 CPU-ms of each
/predict on a 2-core machine), where an `async def` one runs inline on the event loop.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.config import Settings
from service.engine import Engine
from service.gallery import GalleryBackend
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.model_switch import ModelSwitcher


class NotReadyError(RuntimeError):
    """The model or the gallery is not loaded (yet): 503 with Retry-After."""


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    engine: Engine | None = None
    gallery: GalleryBackend | None = None
    failure: str | None = None  # why loading failed, for /health/ready
    switcher: ModelSwitcher | None = None  # model switches (`service.model_switch`)
    background: set[asyncio.Task] = field(default_factory=set)  # stopped at shutdown


async def get_state(request: Request) -> AppState:
    return request.app.state.alexnet


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_engine(state: StateDep) -> Engine:
    if state.engine is None:
        raise NotReadyError(state.failure or "the model is still loading")
    return state.engine


def current_engine(state: AppState, started_with: Engine) -> Engine:
    """The engine in use now: a request that read its upload during a model switch embeds
    with the new model (call it right before `infer`, with no `await` in between, so the
    engine cannot be retired before the request is queued)."""
    return state.engine or started_with


def model_sha256(engine: Engine) -> str:
    """The sha256 a gallery records for the engine's vectors."""
    return engine.loaded.gallery_binding()["model_sha256"]


async def get_gallery(state: StateDep) -> GalleryBackend:
    if state.gallery is None:
        raise NotReadyError(state.failure or "the gallery is still loading")
    return state.gallery


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
GalleryDep = Annotated[GalleryBackend, Depends(get_gallery)]


# In the OpenAPI schema as a bearer scheme; the check itself is require_api_key's.
bearer = HTTPBearer(auto_error=False, description="ALEXNET_API_KEY, when it is set")


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Gallery writes need `Authorization: Bearer <ALEXNET_API_KEY>` when a key is set."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), expected
    ):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


ApiKeyDep = Depends(require_api_key)
