"""Operations: ``GET /health`` (gateway + Triton readiness) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from gateway import metrics, service
from gateway.deps import SettingsDep, TritonDep, require_token_for_health, require_token_for_metrics

router = APIRouter(tags=["system"])


@router.get("/health", dependencies=[Depends(require_token_for_health)])
async def health(request: Request, settings: SettingsDep, triton: TritonDep) -> JSONResponse:
    """Readiness: 503 while Triton or its default model cannot serve (take the gateway out of rotation)."""
    ok, body = await service.health(triton, settings, request.app.state.watchdog)
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/health/live", dependencies=[Depends(require_token_for_health)])
async def live() -> dict[str, str]:
    """Liveness: the gateway's event loop answers, whatever Triton does (restart the gateway only if not)."""
    return {"status": "ok"}


@router.get("/metrics", dependencies=[Depends(require_token_for_metrics)])
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
