"""``create_app()``: the gateway's FastAPI application.

    uvicorn gateway.main:create_app --factory --host 0.0.0.0 --port 8080
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway import __version__, chinese, errors
from gateway.config import Settings
from gateway.deps import InFlightLimiter
from gateway.jobs import Jobs
from gateway.limits import PathBodyLimits
from gateway.metrics import MetricsMiddleware
from gateway.routes import load_routers
from gateway.routes.web import static_files
from gateway.streaming.serving import Admission
from gateway.triton import TritonClient

log = logging.getLogger("gateway")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chinese.preload()
        if getattr(app.state, "triton", None) is None:  # tests may install a fake first
            app.state.triton = TritonClient(
                settings.triton_url, timeout_s=settings.triton_timeout_s,
                health_timeout_s=settings.health_timeout_s, retry_after_s=settings.retry_after_s,
                max_concurrency=settings.max_triton_concurrency)
        log.info("gateway up: triton=%s default_model=%s auth=%s", settings.triton_url,
                 settings.default_model, "on" if settings.api_key else "off")
        app.state.jobs = Jobs(settings, app.state.triton)
        await app.state.jobs.start()
        try:
            yield
        finally:
            await app.state.jobs.stop()
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
    app.state.triton = None
    app.state.limiter = InFlightLimiter(settings.max_in_flight)
    app.state.stream_admission = Admission.from_settings(settings)  # live sessions (/v1/realtime, /v1/stream)
    errors.install(app)
    app.add_middleware(PathBodyLimits, max_bytes=settings.max_upload_bytes,
                       path_limits={"/v1/jobs": settings.max_job_upload_bytes})
    app.add_middleware(MetricsMiddleware)
    for router in load_routers():
        app.include_router(router)
    app.mount("/static", static_files(), name="static")
    return app
