"""Prometheus metrics and the ASGI middleware that records them per route template."""

from __future__ import annotations

import time

from prometheus_client import (CONTENT_TYPE_LATEST, GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR,
                               CollectorRegistry, Counter, Gauge, Histogram, generate_latest)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The gateway's own registry, not prometheus_client's global default one: what /metrics shows is exactly
# this module's collectors and the process/platform/GC ones, whatever else the process imports.
REGISTRY = CollectorRegistry()
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)

REQUESTS = Counter("gateway_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
                   registry=REGISTRY)
LATENCY = Histogram("gateway_request_duration_seconds", "HTTP request latency by route", ["route"],
                    buckets=_LATENCY_BUCKETS, registry=REGISTRY)
IN_FLIGHT = Gauge("gateway_requests_in_flight", "HTTP requests being served", registry=REGISTRY)
AUDIO_SECONDS = Counter("gateway_audio_seconds", "Seconds of audio transcribed", ["model", "task"],
                        registry=REGISTRY)
TRITON_ERRORS = Counter("gateway_triton_errors", "Failed Triton calls by kind", ["kind"], registry=REGISTRY)
TRITON_WAITING = Gauge("gateway_triton_waiting", "Requests holding decoded audio, waiting for a Triton slot "
                       "(GATEWAY_MAX_TRITON_CONCURRENCY calls are outstanding at once)", registry=REGISTRY)
TRITON_ACTIVE = Gauge("gateway_triton_active", "Inference calls outstanding to Triton", registry=REGISTRY)
TRITON_LATENCY = Histogram("gateway_triton_request_duration_seconds", "Triton inference latency", ["model"],
                           buckets=_LATENCY_BUCKETS, registry=REGISTRY)


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every HTTP request by its route template (not the raw path), status and latency."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            IN_FLIGHT.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            LATENCY.labels(route).observe(time.perf_counter() - start)
