"""Operations: ``GET /health`` (gateway + Triton readiness) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from gateway import metrics, protocol, service
from gateway.deps import SettingsDep, TritonDep, require_token_for_health, require_token_for_metrics

router = APIRouter(tags=["system"])


@router.get("/health", dependencies=[Depends(require_token_for_health)],
            responses={200: {"model": protocol.Health}, 503: {"model": protocol.Health}})
async def health(settings: SettingsDep, triton: TritonDep) -> JSONResponse:
    ok, body = await service.health(triton, settings)
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", dependencies=[Depends(require_token_for_metrics)])
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
