"""Kubernetes probes: /health/live (the event loop) and /health/ready (DESIGN.md §6).

These two are the only routes open without a key.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cai_judge.api.deps import ServicesDep
from cai_judge.api.schemas import HealthStatus

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> HealthStatus:
    # Answering at all proves the event loop runs.
    return HealthStatus(status="ok", checks={"event_loop": "ok"})


@router.get(
    "/health/ready",
    response_model=HealthStatus,
    responses={503: {"model": HealthStatus, "description": "Not ready"}},
)
async def ready(services: ServicesDep) -> JSONResponse:
    readiness = await services.health.readiness()
    status = HealthStatus.from_readiness(readiness)
    return JSONResponse(status.model_dump(), status_code=200 if readiness.ready else 503)
