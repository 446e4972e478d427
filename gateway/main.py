"""``create_app()``: the gateway's FastAPI application.

    python -m gateway --host 0.0.0.0 --port 8080   # uvicorn with the server-level limits from Settings
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway import __version__, chinese, errors
from gateway.config import Settings
from gateway.deps import InFlightLimiter
from gateway.jobs import Jobs
from gateway.limits import ClientCounter, PathBodyLimits, PerClientUploads, UploadPace
from gateway.metrics import MetricsMiddleware
from gateway.routes import load_routers
from gateway.routes.web import static_files
from gateway.streaming.serving import Admission
from gateway.triton import TritonClient
from gateway.watchdog import Watchdog

log = logging.getLogger("gateway")


def create_app(settings: Settings | None = None, *, triton: TritonClient | None = None) -> FastAPI:
    """The app; ``triton`` (tests pass a fake) replaces the ``TritonClient`` it would open at startup."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chinese.preload()
        if app.state.triton is None:
            app.state.triton = TritonClient(
                settings.triton_url, timeout_s=settings.triton_timeout_s, deadline_s=settings.triton_deadline_s,
                deadline_per_audio_s=settings.triton_deadline_per_audio_s,
                health_timeout_s=settings.health_timeout_s, retry_after_s=settings.retry_after_s,
                max_concurrency=settings.max_triton_concurrency)
        watching = None
        if isinstance(app.state.triton, TritonClient):
            app.state.watchdog = Watchdog(app.state.triton, settings.default_model,
                                          interval_s=settings.watchdog_interval_s,
                                          timeout_s=settings.watchdog_timeout_s,
                                          probe_idle_s=settings.watchdog_probe_idle_s)
            watching = asyncio.create_task(app.state.watchdog.run(), name="triton-watchdog")
        log.info("gateway up: triton=%s default_model=%s auth=%s", settings.triton_url,
                 settings.default_model, "on" if settings.api_key else "off")
        app.state.jobs = Jobs(settings, app.state.triton)
        await app.state.jobs.start()
        try:
            yield
        finally:
            await app.state.jobs.stop()
            if watching is not None:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            close = getattr(app.state.triton, "close", None)
            if close is not None:
                await close()

    app = FastAPI(
        title="Whisper gateway",
        version=__version__,
        summary="OpenAI-compatible speech-to-text in front of Triton",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.triton = triton  # the one place routes, jobs and streams get it from (gateway.deps.get_triton)
    app.state.watchdog = None
    app.state.limiter = InFlightLimiter(settings.max_in_flight)
    app.state.upload_clients = ClientCounter(settings.max_requests_per_client)
    app.state.stream_admission = Admission.from_settings(settings)  # live sessions (/v1/realtime, /v1/stream)
    errors.install(app)
    pace = UploadPace(idle_s=settings.body_idle_s, grace_s=settings.body_grace_s,
                      min_rate=settings.min_upload_kib_s * 1024)
    app.add_middleware(PathBodyLimits, max_bytes=settings.max_upload_bytes,
                       path_limits={"/v1/jobs": settings.max_job_upload_bytes}, pace=pace)
    app.add_middleware(PerClientUploads, clients=app.state.upload_clients, key_by=settings.client_key,
                       retry_after_s=settings.retry_after_s)
    app.add_middleware(MetricsMiddleware)
    for router in load_routers():
        app.include_router(router)
    app.mount("/static", static_files(), name="static")
    return app
