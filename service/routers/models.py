"""The models: what is loaded and being prepared (GET /models), its pictures, and switching
to another model while serving (POST /models/switch, `service.model_switch`)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import FileResponse, JSONResponse

from core import model_info, store
from service.deps import ApiKeyDep, StateDep, get_engine, get_gallery
from service.model_switch import SwitchConflictError, SwitchJob
from service.schemas import (
    Error,
    ModelInfo,
    ModelsResponse,
    SwitchRequest,
    SwitchStatus,
    error_responses,
)

router = APIRouter(tags=["operations"])


def status_of(job: SwitchJob) -> SwitchStatus:
    return SwitchStatus(
        model=job.model, precision=job.precision, model_id=job.model_id, kind=job.kind,
        state=job.state, done=job.done, total=job.total, eta_s=job.eta_s, error=job.error,
        started_at=job.started_at, finished_at=job.finished_at,
    )  # fmt: skip


@router.get("/models", response_model=ModelsResponse)
async def models(state: StateDep) -> ModelsResponse:
    """The model in use, the one being prepared (or the last failed switch), and what else
    the store holds."""
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
    job = state.switcher.job if state.switcher is not None else None
    preparing = status_of(job) if job is not None and job.state != "done" else None
    available = [m.id for m in store.list_models(state.settings.store)]
    return ModelsResponse(loaded=loaded, available=available, preparing=preparing)


@router.post(
    "/models/switch",
    status_code=202,
    response_model=SwitchStatus,
    dependencies=[ApiKeyDep],
    responses={
        **error_responses(401, 409, 422, 503),
        400: {"model": Error, "description": "a body that is not JSON"},
        404: {"model": Error, "description": "no such model or version in the store"},
    },
)
async def switch(state: StateDep, body: SwitchRequest) -> JSONResponse:
    """Load another model beside the one in use, re-embed the gallery's stored images with
    it in the background, and switch to it atomically when done.

    Until then the model in use answers every request; items added meanwhile are embedded by
    both. Progress and the outcome are in `GET /models` (`preparing`) and in the metrics
    (`alexnet_model_switch_*`). A failure (a missing or corrupt file, a model off the
    contract, out of memory) leaves the old model serving and `preparing.error` says why.
    With a PostgreSQL gallery every replica follows the switch.
    """
    if state.switcher is None:
        raise HTTPException(503, "model switching is not available")
    await get_engine(state)  # 503 (NotReadyError) until the model and the gallery are loaded
    await get_gallery(state)
    try:
        job = state.switcher.start(body.model, body.precision)
    except SwitchConflictError as e:
        raise HTTPException(409, str(e)) from None
    except FileNotFoundError as e:
        raise HTTPException(404, str(e)) from None
    except ValueError as e:  # a bad spec or manifest
        raise HTTPException(422, str(e)) from None
    return JSONResponse(
        status_of(job).model_dump(), status_code=202, headers={"Location": "/models"}
    )


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
