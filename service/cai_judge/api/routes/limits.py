"""GET /v1/limits: what one request may bring, read once by clients that split their
batches to fit (the SDK's trainer adapters; DESIGN.md §9, "Batches that fit"). Behind the
key like the API; settings only, no engine or store call, so it is cheap to ask."""

from __future__ import annotations

from fastapi import APIRouter

from cai_judge.api.deps import CallerDep, ServicesDep
from cai_judge.api.errors import ERROR_RESPONSES
from cai_judge.api.schemas import Limits

router = APIRouter(tags=["meta"])


@router.get(
    "/v1/limits",
    response_model=Limits,
    responses={status: ERROR_RESPONSES[status] for status in (401, 503)},
    summary="This server's per-request limits, to split batches before sending them",
)
async def limits(services: ServicesDep, caller: CallerDep) -> Limits:
    return Limits.from_settings(services.settings, services.labels.max_score_units)
