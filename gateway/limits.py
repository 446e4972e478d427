"""Upload limits, enforced before and while the body is read, with the OpenAI error body.

Size: a declared ``Content-Length`` over the limit is refused at once, body unread. A body without one
(chunked) is counted as it arrives; the read that passes the limit raises a 413 ``HTTPException``, which
the exception map turns into the same error body. Either way the whole body is never read.

Pace: a body must keep coming. Each read waits at most ``idle_s`` for data, and the body as a whole may
take ``grace_s`` plus one second per ``min_rate`` bytes received: a client that trickles a byte every few
seconds gets 408 (and its connection closed) after about ``grace_s``, whatever the route, instead of
holding its connection, and whatever it holds, for ever.

Clients: at most ``max_per_client`` uploads (requests with a body) of one client at once, being received or
in flight; past it 429 without reading the body beyond its first second or megabyte (read only so that the
client gets the answer rather than a reset connection). A client is its IP address or its bearer token
(``client_key``), so one client's hundreds of connections cannot take every in-flight slot.

Request headers are bounded too: more than ``max_headers`` fields or ``max_header_bytes`` in all gets
431 with the same error body, before any route runs (Apache's default is 100 fields).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from dataclasses import dataclass

from starlette.datastructures import Headers, QueryParams
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import LEGACY_PREFIXES, error_body


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body too large: the limit is {limit} bytes",
                         headers={"Connection": "close"})


class BodyTooSlow(HTTPException):
    def __init__(self, message: str) -> None:
        super().__init__(408, message, headers={"Connection": "close"})


MAX_HEADERS = 100
MAX_HEADER_BYTES = 32 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class UploadPace:
    """How slowly a body may arrive: ``idle_s`` per read, and ``grace_s`` + received / ``min_rate`` in all."""

    idle_s: float = 15.0
    grace_s: float = 10.0
    min_rate: float = 16 * 1024  # bytes per second; 0 = no minimum

    def read_timeout(self, started: float, received: int, now: float) -> float:
        """Seconds the next read may wait: the idle limit, or less once the body is behind its minimum rate."""
        timeout = self.idle_s
        if self.min_rate > 0:
            timeout = min(timeout, started + self.grace_s + received / self.min_rate - now)
        return max(timeout, 0.0)


class ClientCounter:
    """Things in progress per client (uploads, streams); ``try_acquire`` refuses past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: Counter[str] = Counter()

    def try_acquire(self, key: str) -> bool:
        if self.active[key] >= self.limit:
            return False
        self.active[key] += 1
        return True

    def release(self, key: str) -> None:
        self.active[key] -= 1
        if self.active[key] <= 0:
            del self.active[key]


INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."


def presented_token(scope: Scope) -> str:
    """The bearer token a request or a stream presents: ``Authorization: Bearer``, or for a WebSocket also
    (a browser cannot set headers on one) the ``openai-insecure-api-key.<key>`` subprotocol that OpenAI's
    browser clients offer, or ``?api_key=`` / ``?token=``; "" for none."""
    header = Headers(scope=scope).get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not token and scope["type"] == "websocket":
        offered = [p for p in scope.get("subprotocols") or () if p.startswith(INSECURE_KEY_PROTOCOL)]
        query = QueryParams(scope.get("query_string", b""))
        token = (offered[0][len(INSECURE_KEY_PROTOCOL):] if offered else "") or query.get("api_key", "") \
            or query.get("token", "")
    return token


def client_key(scope: Scope, by: str = "ip") -> str:
    """Who sent a request or opened a stream: ``ip:ADDRESS`` or, with ``by="token"`` and a token presented,
    ``token:`` and a hash of it."""
    token = presented_token(scope) if by == "token" else ""
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


DRAIN_S = 1.0  # a body refused with 429 is read and dropped this long at most ...
DRAIN_BYTES = 1 << 20  # ... and this much, before the answer: closing the connection on unread data would
# reset it, and the client would see a broken connection instead of the 429


async def _drain(receive: Receive) -> None:
    dropped = 0
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + DRAIN_S):
            while dropped <= DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                dropped += len(message.get("body", b""))
    except TimeoutError:
        pass


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str, code: str,
                  type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
    body = error_body(message, type, code)
    if scope["path"].startswith(LEGACY_PREFIXES):
        body = {"success": False, **body}
    await JSONResponse(body, status_code=status, headers={"Connection": "close", **(headers or {})})(scope, receive, send)


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_headers: int = MAX_HEADERS,
                 max_header_bytes: int = MAX_HEADER_BYTES, pace: UploadPace | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.pace = pace

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
        started = time.monotonic()
        pace = self.pace
        body_done = False  # after the body, a read waits for the client to go away: no time limit then

        async def counting_receive() -> Message:
            nonlocal received, body_done
            if pace is None or body_done:
                message = await receive()
            else:
                timeout = pace.read_timeout(started, received, time.monotonic())
                try:
                    async with asyncio.timeout(timeout):  # not wait_for, which can lose a cancellation (3.11)
                        message = await receive()
                except TimeoutError:
                    raise BodyTooSlow(_too_slow(pace, received, time.monotonic() - started)) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, counting_receive, send)


def _too_slow(pace: UploadPace, received: int, elapsed: float) -> str:
    return (f"Request body too slow: {received} bytes in {elapsed:.0f} s; a body must arrive at "
            f"{pace.min_rate / 1024:g} KiB/s or more after its first {pace.grace_s:g} s, and never pause "
            f"{pace.idle_s:g} s")


class PathBodyLimits:
    """``BodySizeLimit`` with a different limit on some exact paths (``/v1/jobs`` takes long files)."""

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int],
                 pace: UploadPace | None = None) -> None:
        self.default = BodySizeLimit(app, max_bytes=max_bytes, pace=pace)
        self.by_path = {path: BodySizeLimit(app, max_bytes=limit, pace=pace) for path, limit in path_limits.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.by_path.get(scope.get("path", ""), self.default)(scope, receive, send)


class PerClientUploads:
    """At most ``clients.limit`` uploads of one client at once (from before its body is read until its
    response is sent); past it 429 with ``Retry-After``, the body unread."""

    def __init__(self, app: ASGIApp, clients: ClientCounter, key_by: str = "ip", retry_after_s: int = 2) -> None:
        self.app = app
        self.clients = clients
        self.key_by = key_by
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        key = client_key(scope, self.key_by)
        if not self.clients.try_acquire(key):
            await _drain(receive)  # a small upload is read whole, a slow one for a second at most
            await _refuse(scope, receive, send, 429,
                          f"Too many uploads from this client at once (limit {self.clients.limit}); retry shortly",
                          "rate_limit_exceeded", type="rate_limit_error",
                          headers={"Retry-After": str(self.retry_after_s)})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.clients.release(key)
