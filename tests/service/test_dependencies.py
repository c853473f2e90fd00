"""The routers' dependencies run on the event loop, not in FastAPI's thread pool."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

import service.routers

# every module of service/routers with a `router` (service.app includes each of them)
MODULES = [importlib.import_module(f"service.routers.{m.name}")
           for m in pkgutil.iter_modules(service.routers.__path__)]  # fmt: skip
ROUTERS = [m.router for m in MODULES if hasattr(m, "router")]


def dependency_calls(dependant: Dependant) -> list:
    calls = []
    for sub in dependant.dependencies:
        calls += [sub.call, *dependency_calls(sub)]
    return calls


def test_no_route_dependency_is_a_plain_function() -> None:
    """FastAPI runs a plain `def` dependency in a worker thread: a thread hop per dependency
    per request, for what is an attribute lookup. Every one of ours is `async def` (or an
    object whose `__call__` is, like FastAPI's security schemes)."""
    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    assert len(ROUTERS) >= 6 and any(r.path == "/predict" for r in routes)
    seen = 0
    for route in routes:
        for call in dependency_calls(route.dependant):
            target = call if inspect.isroutine(call) else type(call).__call__
            assert inspect.iscoroutinefunction(target), (route.path, call)
            seen += 1
    assert seen > 0
