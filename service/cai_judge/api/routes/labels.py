"""POST /v1/labels."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from cai_judge.api.deps import CallerDep, ServicesDep, unless_disconnected
from cai_judge.api.errors import ERROR_RESPONSES
from cai_judge.api.schemas import LabelRequest, LabelResponse

router = APIRouter(tags=["labels"])

# Nginx's "client closed request": nobody reads it, but logs and metrics should say so.
CLIENT_CLOSED_REQUEST = 499


@router.post(
    "/v1/labels",
    response_model=LabelResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    summary="Label pairs against a constitution",
)
async def create_labels(
    body: LabelRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> LabelResponse | Response:
    outcome = await unless_disconnected(request, services.labels.label(body.to_command(), caller))
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return LabelResponse.from_outcome(outcome)
