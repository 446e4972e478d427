"""Upload size limit, enforced before and while the body is read, with the OpenAI error body.

A declared ``Content-Length`` over the limit is refused at once, body unread. A body without one
(chunked) is counted as it arrives; the read that passes the limit raises a 413 ``HTTPException``, which
the exception map turns into the same error body. Either way the whole body is never read.
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


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            body = error_body(f"Request body too large: {int(declared)} bytes, the limit is {self.max_bytes} bytes",
                              "invalid_request_error", "request_too_large")
            if scope["path"].startswith(LEGACY_PREFIXES):
                body = {"success": False, **body}
            await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)
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
