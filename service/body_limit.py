"""413 for a request body over the service's limit, before the body is read whole.

A body with a Content-Length over the limit is refused before a byte of it is read. A
body without one (chunked transfer) is counted as it arrives: once more than the limit
has come in, reading stops and the request is answered 413, so the multipart parser never
spools more than the limit to memory or disk.
"""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.oip.errors import error_body


class BodyLimitMiddleware:
    """Pure ASGI middleware (it must see each `receive`, which BaseHTTPMiddleware hides).

    Args:
        app: the application.
        max_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = f"request body larger than {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            body = error_body(scope["path"], self.detail)  # the protocol's, under /v2
            await JSONResponse(body, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the body parsing of the route, which passes an
                    # HTTPException on to the app's handler: a JSON 413.
                    raise HTTPException(413, self.detail)
            return message

        await self.app(scope, counting_receive, send)
