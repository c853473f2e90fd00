"""Dependencies of the routers, as Annotated aliases."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from service.config import Settings
from service.engine import Engine
from service.gallery import Gallery
from service.metrics import Metrics


class NotReadyError(RuntimeError):
    """The model or the gallery is not loaded (yet): 503 with Retry-After."""


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    engine: Engine | None = None
    gallery: Gallery | None = None
    failure: str | None = None  # why loading failed, for /health/ready


def get_state(request: Request) -> AppState:
    return request.app.state.alexnet


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_engine(state: StateDep) -> Engine:
    if state.engine is None:
        raise NotReadyError(state.failure or "the model is still loading")
    return state.engine


def get_gallery(state: StateDep) -> Gallery:
    if state.gallery is None:
        raise NotReadyError(state.failure or "the gallery is still loading")
    return state.gallery


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
GalleryDep = Annotated[Gallery, Depends(get_gallery)]


def require_api_key(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Gallery writes need `Authorization: Bearer <ALEXNET_API_KEY>` when a key is set."""
    if settings.api_key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    expected = settings.api_key.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), expected):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


ApiKeyDep = Depends(require_api_key)
