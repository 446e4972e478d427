"""``Annotated`` dependencies: settings, the shared Triton client, auth, and the in-flight limit."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.aio import Interrupted, unless
from gateway.config import Settings
from gateway.errors import ClientGone, TooManyRequests, Unauthorized
from gateway.limits import presented_token
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


def websocket_credentials(ws: WebSocket) -> HTTPAuthorizationCredentials | None:
    """A WebSocket's token as credentials for ``check_token`` (``gateway.limits.presented_token``)."""
    token = presented_token(ws.scope)
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


T = TypeVar("T")


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or, if the client disconnects first, ``ClientGone`` (a 499 line in the log) with
    ``work`` cancelled, and its Triton call with it: a request still queued in Triton is dropped there.
    Call it once the body has been read: from then on the connection has nothing to say but goodbye."""
    try:
        return await unless(work, _disconnected(request))
    except Interrupted:
        raise ClientGone() from None


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
