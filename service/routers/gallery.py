"""The gallery: add images (their fc7 vectors), list, fetch, delete, and search by similarity."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from service.deps import (
    ApiKeyDep,
    AppState,
    EngineDep,
    GalleryDep,
    SettingsDep,
    StateDep,
    current_engine,
    model_sha256,
)
from service.engine import Engine, NonFiniteOutputError, OverloadedError
from service.gallery import GalleryModelChangedError, NewItem
from service.gallery.items import has_nul
from service.model_switch import SwitchJob
from service.schemas import (
    AddResponse,
    GalleryItem,
    GalleryPage,
    ItemRef,
    SimilarResponse,
    error_responses,
)
from service.uploads import read_images

router = APIRouter(tags=["gallery"])
ItemId = Annotated[str, Path(description="the id returned by POST /gallery")]
MAX_OFFSET = 2**63 - 1  # SQLite's largest integer


def _item(item) -> GalleryItem:
    return GalleryItem(
        id=item.id, label=item.label, metadata=item.metadata, created_at=item.created_at,
        image_url=f"/gallery/{item.id}/image",
    )  # fmt: skip


# Deeper metadata could be stored but not answered: pydantic refuses to serialise beyond
# about 255 levels, which would make every page listing the item fail.
MAX_METADATA_DEPTH = 32


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _depth(value: object) -> int:
    """How many containers (objects, arrays) deep a parsed JSON value nests."""
    depth, level = 0, [value]
    while level := [v for v in level if isinstance(v, dict | list)]:
        depth += 1
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def _parse_metadata(metadata: str | None, limit: int) -> dict:
    if metadata is None or metadata == "":
        return {}
    if len(metadata.encode("utf-8", "surrogatepass")) > limit:
        raise HTTPException(413, f"metadata is larger than {limit} bytes")
    try:
        value = json.loads(metadata, parse_constant=_reject_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone \ud800 cannot be stored
    except (ValueError, RecursionError) as e:
        raise HTTPException(422, f"metadata is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise HTTPException(422, "metadata must be a JSON object")
    if has_nul(value):
        raise HTTPException(422, "metadata must not contain NUL characters (\\u0000)")
    if _depth(value) > MAX_METADATA_DEPTH:
        raise HTTPException(422, f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    return value


@router.post(
    "/similar",
    response_model=SimilarResponse,
    tags=["similar"],
    responses=error_responses(400, 413, 415, 422, 500, 503),
)
async def similar(
    state: StateDep,
    engine: EngineDep,
    gallery: GalleryDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="the query image")],
    k: Annotated[int, Query(ge=1, le=1000, description="neighbours to return")] = 10,
) -> SimilarResponse:
    uploads = await read_images([image], settings, state.metrics)

    async def search(engine: Engine) -> SimilarResponse:
        _, fc7 = await engine.infer(uploads.pixels)
        found = await run_in_threadpool(gallery.search, fc7[0], k, model_sha256(engine))
        return SimilarResponse(neighbors=found)

    return await with_current_model(state, engine, search)


@router.post(
    "/gallery",
    status_code=201,
    response_model=AddResponse,
    dependencies=[ApiKeyDep],
    responses=error_responses(400, 401, 413, 415, 422, 500, 503),
)
async def add(
    state: StateDep,
    engine: EngineDep,
    gallery: GalleryDep,
    settings: SettingsDep,
    image: Annotated[
        list[UploadFile], File(min_length=1, description="one or more images (repeat the part)")
    ],
    label: Annotated[
        str | None,
        Form(max_length=200, pattern=r"^[^\x00]*$", description="label of every image (no NUL)"),
    ] = None,
    metadata: Annotated[
        str | None, Form(description="a JSON object stored with every image")
    ] = None,
) -> AddResponse:
    meta = _parse_metadata(metadata, settings.max_metadata_bytes)
    uploads = await read_images(image, settings, state.metrics)

    async def add_items(engine: Engine) -> AddResponse:
        job = state.switcher.accepting() if state.switcher is not None else None
        fc7, next_fc7 = await _embed(engine, job, uploads.pixels)
        items = [
            NewItem(image_bytes=data, image_ext=ext, vector=vector, label=label, metadata=meta)
            for data, ext, vector in zip(uploads.raw, uploads.extensions, fc7, strict=True)
        ]
        ids = await run_in_threadpool(gallery.add, items, model_sha256(engine))  # durable now
        if job is not None and next_fc7 is not None:
            job.note(ids, next_fc7)  # the model being prepared has these items already
        state.metrics.gallery_items.set(len(gallery))
        return AddResponse(items=[ItemRef(id=i) for i in ids])

    return await with_current_model(state, engine, add_items)


async def _embed(
    engine: Engine, job: SwitchJob | None, pixels: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """fc7 of the images by the engine in use and, while a model switch re-embeds the
    gallery, by the model being prepared too (None if it cannot take them: the switch's
    catch-up embeds them then). Both requests are queued before the first await."""
    current = engine.submit(pixels)
    upcoming = job.accepting() if job is not None else None
    try:
        prepared = upcoming.submit(pixels) if upcoming is not None else None
    except OverloadedError:
        prepared = None
    _, fc7 = await current
    if prepared is None:
        return fc7, None
    try:
        return fc7, (await prepared)[1]
    except OverloadedError:  # failed or retired meanwhile
        return fc7, None
    except NonFiniteOutputError:  # the catch-up meets the image again, and fails the switch
        return fc7, None


T = TypeVar("T")


async def with_current_model(
    state: AppState, started_with: Engine, attempt: Callable[[Engine], Awaitable[T]]
) -> T:
    """`attempt(engine)` with the engine in use now. If the gallery refuses its vectors
    because it switched models under the request, and this replica's own switch replaced the
    engine (waiting for a switch in progress to finish), once more with the new engine;
    else the refusal stands (503 with Retry-After: a replica still following the switch)."""
    engine = current_engine(state, started_with)
    try:
        return await attempt(engine)
    except GalleryModelChangedError:
        if state.switcher is None or not await state.switcher.replaced(engine):
            raise
    return await attempt(current_engine(state, engine))


@router.get("/gallery", response_model=GalleryPage, responses=error_responses(422, 503))
async def list_items(
    gallery: GalleryDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> GalleryPage:
    items, total = await run_in_threadpool(gallery.list, offset, limit)
    return GalleryPage(items=[_item(i) for i in items], total=total, offset=offset, limit=limit)


@router.get("/gallery/{item_id}", response_model=GalleryItem, responses=error_responses(404, 503))
async def get_item(gallery: GalleryDep, item_id: ItemId) -> GalleryItem:
    item = await run_in_threadpool(gallery.get, item_id)
    if item is None:
        raise HTTPException(404, f"no gallery item {item_id!r}")
    return _item(item)


@router.get(
    "/gallery/{item_id}/image",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}, "description": "the stored file, as uploaded"},
        **error_responses(404, 503),
    },
)
async def get_image(gallery: GalleryDep, item_id: ItemId) -> Response:
    image = await run_in_threadpool(gallery.image, item_id)
    if image is None:
        raise HTTPException(404, f"no gallery item {item_id!r}")
    media_type = mimetypes.guess_type(f"image{image.ext}")[0] or "application/octet-stream"
    return Response(image.data, media_type=media_type)


@router.delete(
    "/gallery/{item_id}",
    status_code=204,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 404, 503),
)
async def delete_item(state: StateDep, gallery: GalleryDep, item_id: ItemId) -> Response:
    if not await run_in_threadpool(gallery.remove, item_id):
        raise HTTPException(404, f"no gallery item {item_id!r}")
    state.metrics.gallery_items.set(len(gallery))
    return Response(status_code=204)


@router.get(
    "/gallery/{item_id}/similar",
    response_model=SimilarResponse,
    responses=error_responses(404, 422, 503),
)
async def similar_to_item(
    gallery: GalleryDep,
    item_id: ItemId,
    k: Annotated[int, Query(ge=1, le=1000)] = 10,
    exclude_self: Annotated[bool, Query(description="leave the item itself out")] = True,
) -> SimilarResponse:
    found = await run_in_threadpool(gallery.search_by_id, item_id, k, exclude_self)
    if found is None:
        raise HTTPException(404, f"no gallery item {item_id!r}")
    return SimilarResponse(neighbors=found)
