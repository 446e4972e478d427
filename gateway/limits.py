"""Upload size limit, enforced before and while the body is read, with the OpenAI error body.

A declared ``Content-Length`` over the limit is refused at once, body unread. A body without one
(chunked) is counted as it arrives; the read that passes the limit raises a 413 ``HTTPException``, which
the exception map turns into the same error body. Either way the whole body is never read.

Request headers are bounded too: more than ``max_headers`` fields or ``max_header_bytes`` in all gets
431 with the same error body, before any route runs (Apache's default is 100 fields).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import LEGACY_PREFIXES, error_body


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body too large: the limit is {limit} bytes",
                         headers={"Connection": "close"})


MAX_HEADERS = 100
MAX_HEADER_BYTES = 32 * 1024


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str, code: str) -> None:
    body = error_body(message, "invalid_request_error", code)
    if scope["path"].startswith(LEGACY_PREFIXES):
        body = {"success": False, **body}
    await JSONResponse(body, status_code=status, headers={"Connection": "close"})(scope, receive, send)


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_headers: int = MAX_HEADERS,
                 max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_headers = scope.get("headers") or []
        header_bytes = sum(len(name) + len(value) + 4 for name, value in raw_headers)  # "name: value\r\n"
        if len(raw_headers) > self.max_headers or header_bytes > self.max_header_bytes:
            await _refuse(scope, receive, send, 431,
                          f"Request headers too large: {len(raw_headers)} fields, {header_bytes} bytes; the limit is "
                          f"{self.max_headers} fields and {self.max_header_bytes} bytes",
                          "request_header_fields_too_large")
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(scope, receive, send, 413,
                          f"Request body too large: {int(declared)} bytes, the limit is {self.max_bytes} bytes",
                          "request_too_large")
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)


class PathBodyLimits:
    """``BodySizeLimit`` with a different limit on some exact paths (``/v1/jobs`` takes long files)."""

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int]) -> None:
        self.default = BodySizeLimit(app, max_bytes=max_bytes)
        self.by_path = {path: BodySizeLimit(app, max_bytes=limit) for path, limit in path_limits.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.by_path.get(scope.get("path", ""), self.default)(scope, receive, send)
