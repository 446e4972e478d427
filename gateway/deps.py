"""``Annotated`` dependencies: settings, the shared Triton client, auth, and the in-flight limit."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.config import Settings
from gateway.errors import TooManyRequests, Unauthorized
from gateway.triton import TritonClient


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_triton(request: Request) -> TritonClient:
    return request.app.state.triton


SettingsDep = Annotated[Settings, Depends(get_settings)]
TritonDep = Annotated[TritonClient, Depends(get_triton)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


def check_token(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if settings.api_key is None:
        return
    if credentials is None:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})
    expected = settings.api_key.get_secret_value().encode()
    if not secrets.compare_digest(credentials.credentials.encode(), expected):
        raise Unauthorized("Incorrect API key provided", headers={"WWW-Authenticate": "Bearer"})


INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."


def websocket_credentials(ws: WebSocket) -> HTTPAuthorizationCredentials | None:
    """A WebSocket's token: ``Authorization: Bearer``, else (browsers cannot set headers) the
    ``openai-insecure-api-key.<key>`` subprotocol OpenAI's browser clients offer, or ``?api_key=`` / ``?token=``."""
    header = ws.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    for protocol in ws.scope.get("subprotocols") or ():
        if not token and protocol.startswith(INSECURE_KEY_PROTOCOL):
            token = protocol[len(INSECURE_KEY_PROTOCOL):]
    token = token or ws.query_params.get("api_key", "") or ws.query_params.get("token", "")
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token) if token else None


async def require_token(settings: SettingsDep, credentials: BearerDep) -> None:
    check_token(settings, credentials)


async def require_token_for_health(settings: SettingsDep, credentials: BearerDep) -> None:
    if not settings.open_health:
        check_token(settings, credentials)


async def require_token_for_metrics(settings: SettingsDep, credentials: BearerDep) -> None:
    if not settings.open_metrics:
        check_token(settings, credentials)


class InFlightLimiter:
    """Counts transcriptions in progress; past ``limit`` a request is refused at once (429)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def try_acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


async def in_flight_slot(request: Request, settings: SettingsDep) -> AsyncIterator[None]:
    limiter: InFlightLimiter = request.app.state.limiter
    if not limiter.try_acquire():
        raise TooManyRequests(f"Too many requests in flight (limit {limiter.limit}); retry shortly",
                              headers={"Retry-After": str(settings.retry_after_s)})
    try:
        yield
    finally:
        limiter.release()


Authenticated = Depends(require_token)
InFlightSlot = Depends(in_flight_slot)
