"""POST/GET/DELETE /v1/jobs: durable batch jobs (DESIGN.md §5).

The body is read by hand rather than declared, because an NDJSON upload must stream into
the job service line by line: a declared body would make FastAPI read it whole first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from cai_judge.api.deps import CallerDep, ServicesDep
from cai_judge.api.errors import ERROR_RESPONSES
from cai_judge.api.schemas import JobListBody, JobQuery, JobRequest, JobStatusBody
from cai_judge.services.jobs import (
    MAX_JOBS_PER_LIST,
    MAX_LINE_BYTES,
    MAX_RESULTS_PER_READ,
    lines_of,
)

router = APIRouter(tags=["jobs"])

NDJSON = "application/x-ndjson"

# JobRequest's parts (Pair, ChatMessage, Aggregator) are in the document through
# /v1/labels already, so its schema can point at them there.
_JOB_REQUEST_SCHEMA = {
    k: v
    for k, v in JobRequest.model_json_schema(ref_template="#/components/schemas/{model}").items()
    if k != "$defs"
}
_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _JOB_REQUEST_SCHEMA},
            NDJSON: {
                "schema": {"type": "string", "description": "One pair per line."},
            },
        },
    }
}


def _invalid(error: ValidationError, where: str) -> RequestValidationError:
    return RequestValidationError(
        [{**e, "loc": (where, *e["loc"])} if where else e for e in error.errors()]
    )


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobStatusBody,
    responses=ERROR_RESPONSES,
    openapi_extra=_REQUEST_BODY,
    summary="Submit a batch job: pairs inline (JSON) or one per line (NDJSON, streamed)",
)
async def create_job(
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobStatusBody:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in (NDJSON, "application/jsonl", "application/jsonlines"):
        try:
            query = JobQuery.model_validate(dict(request.query_params))
        except ValidationError as error:
            raise _invalid(error, "query") from None
        options = query.to_options()
        # The body limit's middleware lets uploads through: this bounds them instead.
        max_bytes = services.settings.jobs_max_upload_bytes
        lines = lines_of(request.stream(), MAX_LINE_BYTES, max_bytes)
    else:
        try:
            body = JobRequest.model_validate_json(await request.body())
        except ValidationError as error:
            raise _invalid(error, "") from None
        options = body.to_options()
        lines = _pair_lines(body)
    status, _ = await services.jobs.submit(options, lines, caller, idempotency_key)
    return JobStatusBody.from_status(status)


async def _pair_lines(body: JobRequest) -> AsyncIterator[bytes]:
    import json

    from cai_judge.labeling.schema import Pair

    for pair in body.pairs:
        data = pair.model_dump(mode="json") if isinstance(pair, Pair) else pair
        yield json.dumps(data, sort_keys=True, ensure_ascii=False).encode()


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobStatusBody,
    responses=ERROR_RESPONSES,
    summary="A job's state, counts, rate and ETA",
)
async def get_job(job_id: str, services: ServicesDep, caller: CallerDep) -> JobStatusBody:
    return JobStatusBody.from_status(await services.jobs.status(job_id, caller))


@router.get(
    "/v1/jobs",
    response_model=JobListBody,
    responses=ERROR_RESPONSES,
    summary="The caller's jobs, newest first (finished ones until they expire)",
)
async def list_jobs(
    services: ServicesDep,
    caller: CallerDep,
    cursor: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_JOBS_PER_LIST)] = 20,
) -> JobListBody:
    statuses, next_cursor = await services.jobs.list(caller, cursor, limit)
    return JobListBody(
        jobs=[JobStatusBody.from_status(s) for s in statuses],
        next_cursor=next_cursor if len(statuses) == limit else None,
    )


@router.get(
    "/v1/jobs/{job_id}/results",
    responses={
        **ERROR_RESPONSES,
        200: {"content": {NDJSON: {"schema": {"type": "string"}}}, "description": "JSONL"},
    },
    response_class=Response,
    summary="Results in input order from `cursor`, the finished prefix only; a page stops "
    "at `limit` lines or CAI_JUDGE_JOBS_MAX_PAGE_BYTES, whichever comes first",
)
async def get_job_results(
    job_id: str,
    services: ServicesDep,
    caller: CallerDep,
    cursor: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_RESULTS_PER_READ)] = 1000,
) -> Response:
    page = await services.jobs.results(job_id, cursor, limit, caller)
    body = b"".join(line + b"\n" for line in page.lines)
    return Response(
        body,
        media_type=NDJSON,
        headers={"X-Next-Cursor": str(page.next_cursor), "X-Job-State": page.state},
    )


@router.delete(
    "/v1/jobs/{job_id}",
    response_model=JobStatusBody,
    responses=ERROR_RESPONSES,
    summary="Cancel a job (a finished one keeps its state)",
)
async def cancel_job(job_id: str, services: ServicesDep, caller: CallerDep) -> JobStatusBody:
    return JobStatusBody.from_status(await services.jobs.cancel(job_id, caller))
