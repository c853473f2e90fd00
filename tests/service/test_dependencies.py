"""The routers' dependencies run on the event loop, not in FastAPI's thread pool."""

from __future__ import annotations

import inspect

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service.routers import gallery, health, models, oip, page, predict

ROUTERS = (predict, gallery, health, models, page, oip)  # as service.app includes them


def dependency_calls(dependant: Dependant) -> list:
    calls = []
    for sub in dependant.dependencies:
        calls += [sub.call, *dependency_calls(sub)]
    return calls


def test_no_route_dependency_is_a_plain_function() -> None:
    """FastAPI runs a plain `def` dependency in a worker thread: a thread hop per dependency
    per request, for what is an attribute lookup. Every one of ours is `async def` (or an
    object whose `__call__` is, like FastAPI's security schemes)."""
    routes = [r for m in ROUTERS for r in m.router.routes if isinstance(r, APIRoute)]
    assert any(r.path == "/predict" for r in routes)
    seen = 0
    for route in routes:
        for call in dependency_calls(route.dependant):
            target = call if inspect.isroutine(call) else type(call).__call__
            assert inspect.iscoroutinefunction(target), (route.path, call)
            seen += 1
    assert seen > 0
