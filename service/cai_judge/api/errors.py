"""One place maps every error to a status code and the envelope `{"error": {...}}`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cai_judge.labeling.constitution import ConstitutionError, ConstitutionNotFound

logger = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.param = param
        self.headers = dict(headers or {})


def error_response(
    status: int,
    type_: str,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"type": type_, "message": message, "param": param}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


_UNION_TAGS = {"int", "str", "float", "bool", "list", "dict", "function-after"}


def _is_union_tag(part: str) -> bool:
    # pydantic names the union member it tried ("constrained-int", "literal['all']",
    # "Pair"); our field names are snake_case, so these never collide with them.
    return part in _UNION_TAGS or "-" in part or "[" in part or part[:1].isupper()


def location_to_param(location: Sequence[Any]) -> str:
    """("body", "pairs", 0, "response_a") -> "pairs.0.response_a"."""
    parts = [str(p) for p in location if isinstance(p, int) or not _is_union_tag(str(p))]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)


def describe_validation(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    first = errors[0]
    param = location_to_param(first.get("loc", ())) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    return message, param


def register_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.type, error.message, error.param, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(error.errors())
        return error_response(422, "invalid_request", message, param)

    @app.exception_handler(ConstitutionNotFound)
    async def _not_found(request: Request, error: ConstitutionNotFound) -> JSONResponse:
        return error_response(404, "not_found", str(error).strip("'\""), "constitution")

    @app.exception_handler(ConstitutionError)
    async def _bad_constitution(request: Request, error: ConstitutionError) -> JSONResponse:
        return error_response(422, "invalid_constitution", str(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(error.status_code, kind, str(error.detail), None, error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal_error", "internal error; see the server log")
