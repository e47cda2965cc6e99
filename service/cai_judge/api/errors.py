"""One place maps every error to an HTTP status and the envelope `{"error": {...}}`.

Services raise the typed errors of `services/errors.py`; this table is the HTTP half of
the mapping (the gRPC servicer has the other). Anything unexpected is a 500 that names
no internals; the log has the traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cai_judge.api.schemas import ErrorEnvelope
from cai_judge.labeling.validation import describe_errors
from cai_judge.services.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    from_domain,
    from_store,
)
from cai_judge.settings import Settings
from cai_judge.store.errors import StoreUnavailable

logger = logging.getLogger(__name__)

HTTP_STATUS: dict[type[ServiceError], int] = {
    TooLarge: 413,
    InvalidRequest: 422,
    NotFound: 404,
    Conflict: 409,
    Unauthenticated: 401,
    PermissionDenied: 403,
    RateLimited: 429,
    Unavailable: 503,
}

# For the OpenAPI document: every route lists the errors it can answer.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in {
        401: "Missing or wrong API key",
        403: "A valid key that may not do this (adding constitutions needs an admin key)",
        404: "Unknown constitution or version",
        409: "Conflicts with what is stored (a reserved constitution id)",
        413: "Request body over the limit",
        422: "Invalid request: the message names the field and the limit",
        429: "Rate limit; retry after `Retry-After` seconds",
        503: "Queue full, draining, cut by shutdown, or Redis unreachable; retry after "
        "`Retry-After` seconds",
    }.items()
}


class BodyTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"request body of {size} bytes is over the limit of {limit}")


def status_of(error: ServiceError) -> int:
    for kind in type(error).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]  # type: ignore[index]
    return 500


def error_response(
    status: int,
    type_: str,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"type": type_, "message": message, "param": param}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def register_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, error: ServiceError) -> JSONResponse:
        headers: dict[str, str] = {}
        if error.retry_after_s is not None:
            headers["Retry-After"] = str(error.retry_after_s)
        if isinstance(error, Unauthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        return error_response(status_of(error), error.type, error.message, error.param, headers)

    @app.exception_handler(ValueError)
    async def _domain_error(request: Request, error: ValueError) -> JSONResponse:
        # A domain ValueError (a profile that does not apply, ...) is the request's
        # fault: 422 naming the field. Any other ValueError is a bug: 500, logged.
        mapped = from_domain(error)
        if mapped is None:
            logger.exception("unhandled error on %s", request.url.path, exc_info=error)
            return error_response(500, "internal_error", "internal error; see the server log")
        return await _service_error(request, mapped)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, error: StoreUnavailable) -> JSONResponse:
        logger.warning("%s %s: %s", request.method, request.url.path, error)
        services = getattr(request.app.state, "services", None)
        retry_after = (
            services.settings.retry_after_s
            if services is not None
            else Settings.model_fields["retry_after_s"].default
        )
        return await _service_error(request, from_store(error, retry_after))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = describe_errors(error.errors())
        return error_response(422, "invalid_request", message, param)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        return error_response(413, "request_too_large", str(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(error.status_code, kind, str(error.detail), None, error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal_error", "internal error; see the server log")
