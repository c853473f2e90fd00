"""The web page at `/`: one static HTML file and its script and style, no CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["page"])


@router.get("/", response_class=FileResponse, include_in_schema=False)
async def page() -> FileResponse:
    """Upload or drop an image: top-5 labels and the most similar gallery images."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


def static_files() -> StaticFiles:
    """`/static/*`: the page's script, style sheet and icon."""
    return StaticFiles(directory=STATIC)
