"""/metrics, /openapi.json and /docs: behind the API key when keys are set (DESIGN.md §6)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cai_judge.api.deps import CallerDep, ServicesDep
from cai_judge.api.errors import ERROR_RESPONSES

router = APIRouter(tags=["meta"], responses=ERROR_RESPONSES)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(services: ServicesDep, caller: CallerDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, caller: CallerDep) -> dict[str, Any]:
    return request.app.openapi()  # type: ignore[no-any-return]


@router.get("/docs", include_in_schema=False)
async def docs(request: Request, caller: CallerDep) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} API")
