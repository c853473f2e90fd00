"""Every HTTP request counted, timed and logged with its request id, as pure ASGI middleware.

Pure ASGI rather than `@app.middleware("http")` (Starlette's BaseHTTPMiddleware), which runs
each request's app in a task of its own and streams the response through a memory stream:
on two cores that was a measurable part of the service's own CPU per image.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

log = logging.getLogger("service")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a client's X-Request-ID, if it is one


def endpoint_label(routes: list[BaseRoute], scope: Scope, arrived: Scope) -> str:
    """The route template a request matched, the metrics' `endpoint` label: "/gallery/{item_id}",
    "/docs", "/static/{path}" for a file of a mounted folder, "unmatched" for none.

    FastAPI records the route in the `scope` only for its own API routes; the docs pages and
    the mounted folders (the app's own routes and mounts, not those of included routers) are
    found by matching the request as it `arrived` (before a mount changed its root path)
    against them again. A request answered before routing (a 413 from the body limit) is
    "unmatched" unless it is for one of those."""
    route = scope.get("route")
    if route is None:
        plain = (r for r in routes if isinstance(r, Route | Mount))
        route = next((r for r in plain if r.matches(arrived)[0] is Match.FULL), None)
    if route is None:
        return "unmatched"
    return f"{route.path}/{{path}}" if isinstance(route, Mount) else route.path


class ObserveMiddleware:
    """Counts (`alexnet_requests_total`) and times (`alexnet_request_seconds`, until the
    response starts) each HTTP request by method, route template and status, answers with
    an X-Request-ID (the client's, if it is a plain token, else a new one) and logs a line
    with it.

    Args:
        app: the application.
        metrics: where requests are counted.
        routes: the app's routes, to name the endpoint (`endpoint_label`).
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get("x-request-id", "")
        if not REQUEST_ID_RE.fullmatch(request_id):  # it goes into logs and a header
            request_id = uuid.uuid4().hex[:16]
        start = time.perf_counter()
        arrived = dict(scope)

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = time.perf_counter() - start
                endpoint = endpoint_label(self.routes, scope, arrived)
                status = message["status"]
                self.metrics.requests.labels(scope["method"], endpoint, str(status)).inc()
                self.metrics.latency.labels(endpoint).observe(elapsed)
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
                log.info("request_id=%s %s %s -> %d in %.1f ms", request_id, scope["method"],
                         arrived["path"], status, 1000 * elapsed)  # fmt: skip
            await send(message)

        await self.app(scope, receive, observed_send)
