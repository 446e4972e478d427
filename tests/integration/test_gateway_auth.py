"""No route bypasses the token: every route of the app, found by walking ``create_app().routes``.

The routes are enumerated from the application itself (routers included under any prefix, routes
hidden from the schema, the WebSocket route, mounted static files, every method of each route), so a
route added later is covered without touching this file. Against a live gateway with ``API_KEY`` set
and ``GATEWAY_OPEN_HEALTH=false GATEWAY_OPEN_METRICS=false``, each route is called with no token, a
wrong token, the token in the wrong scheme (Basic, ``Token``), the token with its case changed,
truncated, extended or split by whitespace, and the token in the query string (which only the
WebSocket accepts, for browsers). Each must answer 401 with the OpenAI error body (``success: false``
beside it on legacy routes); the WebSocket must close with 1008 (policy violation) without a
transcript. With the right token no route answers 401.

Intentionally public, token or not (``PUBLIC``): they carry no data and no transcription.

- ``GET /`` and ``GET /live``: the static shells of the upload and live pages; the pages ask for the
  token and send it with each API call.
- ``/static/*``: those pages' CSS and JS.
- ``GET /openapi.json``, ``/docs``, ``/docs/oauth2-redirect``, ``/redoc``: the API description (the
  same for every deployment, published with the source); the launchers probe ``/openapi.json`` for
  readiness.

The set of routes that answer without the token must equal ``PUBLIC`` exactly, and with the default
settings (``open_health``/``open_metrics`` true) ``PUBLIC`` plus ``/health``, ``/health/live`` (liveness),
``/stt/health`` (its legacy alias) and ``/metrics``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.routing import Mount, WebSocketRoute

from gateway.main import create_app
from gateway.routes.web import STATIC_DIR
from tests.integration.conftest import TOKEN, run_gateway

pytestmark = pytest.mark.integration

PUBLIC = {
    ("GET", "/"), ("GET", "/live"),
    ("GET", "/static/*"), ("HEAD", "/static/*"),
    ("GET", "/openapi.json"), ("HEAD", "/openapi.json"), ("GET", "/docs"), ("HEAD", "/docs"),
    ("GET", "/docs/oauth2-redirect"), ("HEAD", "/docs/oauth2-redirect"), ("GET", "/redoc"), ("HEAD", "/redoc"),
}
OPEN_BY_DEFAULT = {("GET", "/health"), ("GET", "/health/live"), ("GET", "/stt/health"), ("GET", "/metrics")}
LEGACY_PREFIXES = ("/transcribe/", "/stt/", "/models")
PATH_PARAMS = {"model": "whisper", "job_id": "0123456789abcdef0123456789abcdef"}
WAV = (b"RIFF" + (36 + 3200).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
       + bytes([1, 0, 1, 0]) + (16000).to_bytes(4, "little") + (32000).to_bytes(4, "little") + bytes([2, 0, 16, 0])
       + b"data" + (3200).to_bytes(4, "little") + bytes(3200))  # 0.1 s of silence

BAD_CREDENTIALS = {  # name: (headers, query)
    "none": ({}, {}),
    "wrong token": ({"Authorization": "Bearer wrong-token"}, {}),
    "scheme only": ({"Authorization": "Bearer"}, {}),
    "basic": ({"Authorization": "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()}, {}),
    "basic raw token": ({"Authorization": f"Basic {TOKEN}"}, {}),
    "token scheme": ({"Authorization": f"Token {TOKEN}"}, {}),
    "no scheme": ({"Authorization": TOKEN}, {}),
    "no space": ({"Authorization": f"Bearer{TOKEN}"}, {}),
    "upper case": ({"Authorization": f"Bearer {TOKEN.upper()}"}, {}),
    "truncated": ({"Authorization": f"Bearer {TOKEN[:-1]}"}, {}),
    "extended": ({"Authorization": f"Bearer {TOKEN}x"}, {}),
    "split by a space": ({"Authorization": f"Bearer {TOKEN[:4]} {TOKEN[4:]}"}, {}),
    "with a second word": ({"Authorization": f"Bearer {TOKEN} {TOKEN}"}, {}),
    "tab separator": ({"Authorization": f"Bearer\t{TOKEN}"}, {}),
    "other header": ({"X-API-Key": TOKEN, "Api-Key": TOKEN}, {}),
    "cookie": ({"Cookie": f"api_key={TOKEN}; token={TOKEN}"}, {}),
    "query on http": ({}, {"api_key": TOKEN, "token": TOKEN}),
}
WS_BAD_CREDENTIALS = {k: v for k, v in BAD_CREDENTIALS.items() if k != "query on http"} | {
    "wrong query": ({}, {"api_key": "wrong-token"}),
    "upper-case query": ({}, {"token": TOKEN.upper()}),
}


@dataclass(frozen=True)
class Endpoint:
    method: str  # an HTTP method, or "WS"
    path: str  # the route's path; "/static/*" for the mount
    url: str  # a concrete path to call

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)


def _route_contexts(app) -> Iterator[object]:
    """Every route of the app, routers flattened (FastAPI >= 0.160 keeps included routers as nodes)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are copied into app.routes
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def endpoints() -> list[Endpoint]:
    app = create_app()
    found: list[Endpoint] = []
    for route in _route_contexts(app):
        original = getattr(route, "original_route", route)
        path = route.path
        url = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PATH_PARAMS.get(m.group(1), "x"), path)
        if isinstance(original, Mount):
            asset = sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file())[0]
            found += [Endpoint(m, f"{path}/*", f"{path}/{asset}") for m in ("GET", "HEAD")]
        elif isinstance(original, WebSocketRoute) or type(original).__name__ == "APIWebSocketRoute":
            found.append(Endpoint("WS", path, url))
        else:
            found += [Endpoint(m, path, url) for m in sorted(route.methods or ())]
    assert found, "no routes found"
    return sorted(set(found), key=lambda e: (e.path, e.method))


ENDPOINTS = endpoints()
HTTP_ENDPOINTS = [e for e in ENDPOINTS if e.method != "WS"]
WS_ENDPOINTS = [e for e in ENDPOINTS if e.method == "WS"]


def call(client: httpx.Client, endpoint: Endpoint, headers: dict, params: dict) -> httpx.Response:
    """One request, with a small valid upload where a route takes one (so only the token decides)."""
    kwargs: dict = {"headers": headers, "params": params}
    if endpoint.method in ("POST", "PUT", "PATCH"):
        if endpoint.path == "/transcribe/binary":
            kwargs["content"] = WAV
        else:
            kwargs["files"] = {"file": ("a.wav", WAV, "audio/wav")}
            # (the English-only model refuses to translate: a refusal repeated would meet Triton's cache)
            kwargs["data"] = {"model": "whisper" if "translat" in endpoint.path else "whisper-tiny-en"}
    return client.request(endpoint.method, endpoint.url, **kwargs)


def assert_401(endpoint: Endpoint, r: httpx.Response, what: str) -> None:
    assert r.status_code == 401, f"{endpoint.method} {endpoint.url} with {what}: {r.status_code} {r.text[:200]}"
    if endpoint.method == "HEAD":
        return
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "authentication_error" and body["error"]["code"] == "invalid_api_key", body
    if endpoint.path.startswith(LEGACY_PREFIXES):
        assert body["success"] is False, body
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers


@pytest.fixture(scope="module")
def locked_gateway(triton, tmp_path_factory) -> Iterator[str]:
    """A token set, and /health and /metrics closed too."""
    with run_gateway(triton.grpc_url, tmp_path_factory.mktemp("gateway-locked"), API_KEY=TOKEN,
                     GATEWAY_OPEN_HEALTH="false", GATEWAY_OPEN_METRICS="false") as url:
        yield url


@pytest.fixture(scope="module")
def locked(locked_gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=locked_gateway, timeout=60) as client:
        yield client


def test_routes_are_enumerated_from_the_app():
    """The walk finds the routes of every router, hidden ones, the WebSocket and the static mount."""
    keys = {e.key for e in ENDPOINTS}
    for expected in [("POST", "/v1/audio/transcriptions"), ("GET", "/v1/models/{model}"), ("POST", "/transcribe/binary"),
                     ("POST", "/stt/transcribe"), ("GET", "/"), ("GET", "/live"), ("WS", "/v1/stream"),
                     ("GET", "/static/*"), ("GET", "/openapi.json"), ("GET", "/health"), ("GET", "/metrics")]:
        assert expected in keys, expected
    assert len(ENDPOINTS) >= 25


@pytest.mark.parametrize("endpoint", [e for e in HTTP_ENDPOINTS if e.key not in PUBLIC], ids=lambda e: f"{e.method} {e.path}")
def test_every_protected_route_refuses_bad_credentials(locked, endpoint):
    for what, (headers, params) in BAD_CREDENTIALS.items():
        assert_401(endpoint, call(locked, endpoint, headers, params), what)
    if endpoint.method == "GET":  # a HEAD must not slip past a GET route's check (405 where not routed)
        assert locked.head(endpoint.url).status_code in (401, 405), endpoint


@pytest.mark.parametrize("endpoint", HTTP_ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
def test_the_right_token_is_never_401(locked, endpoint):
    r = call(locked, endpoint, {"Authorization": f"Bearer {TOKEN}"}, {})
    assert r.status_code != 401 and r.status_code < 500, (endpoint, r.status_code, r.text[:200])
    r = call(locked, endpoint, {"Authorization": f"bearer {TOKEN}"}, {})  # the scheme is case-insensitive
    assert r.status_code != 401, (endpoint, r.status_code, r.text[:200])


def _public(client: httpx.Client) -> set[tuple[str, str]]:
    """The routes that answer something other than 401 without a token."""
    public = {e.key for e in HTTP_ENDPOINTS if call(client, e, {}, {}).status_code != 401}
    return public | {e.key for e in WS_ENDPOINTS if not _ws_refused(str(client.base_url), e, {}, {})}


def test_public_routes_are_exactly_the_allowlist(locked):
    assert _public(locked) == PUBLIC


def test_default_settings_open_only_health_and_metrics(gateway_with_token):
    with httpx.Client(base_url=gateway_with_token, timeout=60) as client:
        assert _public(client) == PUBLIC | OPEN_BY_DEFAULT


# -- the WebSocket ---------------------------------------------------------------------------------


def _ws_url(base: str, endpoint: Endpoint, params: dict) -> str:
    query = str(httpx.QueryParams(params))
    return base.replace("http://", "ws://").rstrip("/") + endpoint.url + (f"?{query}" if query else "")


def _ws_refused(base: str, endpoint: Endpoint, headers: dict, params: dict) -> bool:
    """True when the stream refuses: 401/403 at the handshake, or closed with 1008 before any transcript."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(_ws_url(base, endpoint, params), additional_headers=headers, open_timeout=10,
                     close_timeout=5) as ws:
            try:
                ws.send(json.dumps({"type": "start", "format": "pcm_s16le", "model": "whisper-tiny-en"}))
                ws.send(bytes(32000))  # 1 s of silence
                ws.send(json.dumps({"type": "stop"}))
                while True:
                    event = json.loads(ws.recv(timeout=30))
                    assert event.get("type") not in ("partial", "final", "done"), f"a transcript without the token: {event}"
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                return code == 1008
    except InvalidStatus as exc:
        return exc.response.status_code in (401, 403)


# The event that shows a WebSocket route served the client: /v1/stream's ``done`` after a stop; a realtime
# session's ``session.created`` (the session is open and takes audio).
WS_SERVED = {"/v1/stream": "done", "/v1/realtime": "session.created"}


def _ws_accepted(base: str, endpoint: Endpoint, headers: dict, params: dict) -> dict:
    from websockets.sync.client import connect

    with connect(_ws_url(base, endpoint, params), additional_headers=headers, open_timeout=10) as ws:
        if endpoint.path == "/v1/realtime":
            return json.loads(ws.recv(timeout=60))
        ws.send(json.dumps({"type": "start", "format": "pcm_s16le", "model": "whisper-tiny-en"}))
        ws.send(json.dumps({"type": "stop"}))
        while True:
            event = json.loads(ws.recv(timeout=60))
            if event.get("type") in ("done", "error"):
                return event


@pytest.mark.parametrize("endpoint", WS_ENDPOINTS, ids=lambda e: e.path)
def test_websocket_refuses_bad_credentials(locked_gateway, endpoint):
    for what, (headers, params) in WS_BAD_CREDENTIALS.items():
        assert _ws_refused(locked_gateway, endpoint, headers, params), f"{endpoint.path} with {what}"


@pytest.mark.parametrize("endpoint", WS_ENDPOINTS, ids=lambda e: e.path)
def test_websocket_accepts_the_token(locked_gateway, endpoint):
    for headers, params in (({"Authorization": f"Bearer {TOKEN}"}, {}), ({}, {"api_key": TOKEN})):
        event = _ws_accepted(locked_gateway, endpoint, headers, params)
        assert event["type"] == WS_SERVED[endpoint.path], event
