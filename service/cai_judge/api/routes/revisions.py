"""POST /v1/revisions: SL-CAI critique and revision chains (services/revisions.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from cai_judge.api.deps import CallerDep, ServicesDep, unless_disconnected
from cai_judge.api.errors import ERROR_RESPONSES
from cai_judge.api.routes.labels import CLIENT_CLOSED_REQUEST
from cai_judge.api.schemas import RevisionRequest, RevisionResponse

router = APIRouter(tags=["revisions"])


@router.post(
    "/v1/revisions",
    response_model=RevisionResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    summary="Critique and revise responses against a constitution (SL-CAI)",
)
async def create_revisions(
    body: RevisionRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> RevisionResponse | Response:
    outcome = await unless_disconnected(
        request, services.revisions.revise(body.to_command(), caller)
    )
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return RevisionResponse.from_outcome(outcome)
