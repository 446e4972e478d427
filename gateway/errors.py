"""The one exception map at the boundary: every error leaves as OpenAI's error body.

``{"error": {"message", "type", "param", "code"}}``. Legacy routes (``/transcribe/*``, ``/stt/*``,
``/models``) get ``"success": false`` beside it, so the earlier clients' ``if not r["success"]`` checks
keep working.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger("gateway")

LEGACY_PREFIXES = ("/transcribe/", "/stt/", "/models")


class APIError(Exception):
    """An error with its HTTP status, OpenAI ``type``/``code``/``param`` and extra headers."""

    status_code = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}


class InvalidRequest(APIError):
    status_code = 400
    code = "invalid_request"


class MediaError(APIError):
    """Unsupported or corrupt media (415), or media with nothing to transcribe (400)."""

    status_code = 415
    code = "unsupported_media"


class ModelNotFound(APIError):
    status_code = 404
    code = "model_not_found"


class Unauthorized(APIError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class TooManyRequests(APIError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailable(APIError):
    status_code = 503
    type = "server_error"
    code = "service_unavailable"


class ClientGone(ClientDisconnect):
    """The client went away while its request was served (its Triton call has been cancelled)."""


CLIENT_CLOSED = 499  # nginx's "client closed request": logged and counted, never seen by the client


_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 429: "rate_limit_error"}
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
                 415: "unsupported_media"}


MAX_MESSAGE_CHARS = 1000
# Bidirectional controls (a name could reverse the text around it in a log viewer or a browser).
_BIDI = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C))


def safe_message(message: str) -> str:
    """An error message fit to show: control, bidi and line-separator characters escaped (``\\x00``,
    ``\\u202e``), at most ``MAX_MESSAGE_CHARS``. Messages may quote what a client sent."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    if message.isprintable() and not _BIDI.intersection(message):
        return message
    return "".join(ascii(c)[1:-1] if not c.isprintable() or c in _BIDI else c for c in message)


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": safe_message(message), "type": type, "param": param, "code": code}}


def body_of(exc: BaseException) -> dict[str, Any]:
    """The OpenAI error body for an exception: an ``APIError``'s own, anything else an internal error."""
    if isinstance(exc, APIError):
        return error_body(exc.message, exc.type, exc.code, exc.param)
    return error_body("Internal server error", "server_error", "internal_error")


def _respond(request: Request, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    if request.url.path.startswith(LEGACY_PREFIXES):
        body = {"success": False, **body}
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return _respond(request, exc.status_code, body_of(exc), exc.headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """One log line for a client that left mid-body or mid-request: its own doing, not a server error."""
    client = request.client.host if request.client else "?"
    log.info("%d %s %s from %s: the client went away before the response", CLIENT_CLOSED, request.method,
             request.url.path, client)
    return Response(status_code=CLIENT_CLOSED)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI's "error parsing the body" for a form cut short
        return await _client_gone(request, exc.__cause__)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if status == 404 and message == "Not Found":
        message = f"No route for {request.method} {request.url.path}"
    type_ = _STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return _respond(request, status, error_body(message, type_, _STATUS_CODES.get(status)), dict(exc.headers or {}))


def _describe(error: dict[str, Any]) -> tuple[str, str | None]:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header", "form")]
    param = loc[0] if loc else None
    if error.get("type") == "missing":
        return f"Missing required parameter: '{param}'", param
    return f"Invalid value for '{param}': {error.get('msg', 'invalid')}", param


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    message, param = _describe(errors[0]) if errors else ("Invalid request", None)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return _respond(request, 400, error_body(message, "invalid_request_error", "invalid_value", param))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _respond(request, 500, body_of(exc))


def install(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
