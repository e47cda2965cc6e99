"""Typed errors, one per status, after openai-python's `_exceptions.py`.

Every error raised by a call carries what is needed to act on it or report it: the HTTP
status, the service's error envelope `{"error": {"type", "message", "param"}}` (as `.type`,
`.message`, `.param` and the raw `.body`), and the request id (`X-Request-Id`, sent by the
client on every attempt of one logical call, or the server's own if it answers one).
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CaiJudgeError",
    "ConflictError",
    "InternalServerError",
    "JobResultsGone",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
]


class CaiJudgeError(Exception):
    """Base of everything this SDK raises."""


class JobResultsGone(CaiJudgeError):
    """A finished job's results are no longer on the server: every pair of the job has a
    result, yet a page from `cursor` came back empty. The server evicted them (Redis under
    memory pressure) or lost them; they do not come back by asking again: resubmit."""

    def __init__(self, job_id: str, state: str, cursor: int, total: int) -> None:
        self.job_id, self.state, self.cursor, self.total = job_id, state, cursor, total
        super().__init__(
            f"job {job_id} is {state} with all {total} results written, but the server no "
            f"longer holds them from result {cursor} on: they were evicted or lost (asking "
            "again will not bring them back); submit the pairs again as a new job"
        )


class APIError(CaiJudgeError):
    message: str
    request: httpx.Request
    body: object | None
    request_id: str | None

    def __init__(self, message: str, request: httpx.Request, *, body: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.body = body
        self.request_id = request.headers.get("x-request-id")


class APIStatusError(APIError):
    """The server answered with a 4xx or 5xx status."""

    status_code: int
    response: httpx.Response
    type: str | None
    param: str | None

    def __init__(self, message: str, *, response: httpx.Response, body: object | None) -> None:
        super().__init__(message, response.request, body=body)
        self.response = response
        self.status_code = response.status_code
        # The server's id wins when it sends one; otherwise the one this client sent.
        self.request_id = response.headers.get("x-request-id") or self.request_id
        detail = _error_detail(body)
        self.type = detail.get("type") if isinstance(detail.get("type"), str) else None
        self.param = detail.get("param") if isinstance(detail.get("param"), str) else None

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.status_code} {self.message}{where}"


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401: no key, or a wrong one. Set CAI_JUDGE_API_KEY or pass api_key=."""


class PermissionDeniedError(APIStatusError):
    """403: a valid key that may not do this (adding constitutions needs an admin key)."""


class NotFoundError(APIStatusError):
    """404: an unknown constitution, version or job."""


class ConflictError(APIStatusError):
    """409: conflicts with what is stored (a reserved constitution id)."""


class RequestTooLargeError(APIStatusError):
    """413: the body is over the server's limit; send fewer pairs per request."""


class UnprocessableEntityError(APIStatusError):
    """422: the request is invalid; `.param` names the field and `.message` the limit."""


class RateLimitError(APIStatusError):
    """429: over the per-key rate limit (retried, honouring Retry-After)."""


class InternalServerError(APIStatusError):
    """5xx."""


class ServiceUnavailableError(InternalServerError):
    """503: queue full, draining or cut by shutdown (retried, honouring Retry-After)."""


class APIConnectionError(APIError):
    """No answer: the connection failed or broke before a response arrived."""

    def __init__(self, request: httpx.Request, *, message: str = "Connection error.") -> None:
        super().__init__(message, request, body=None)


class APITimeoutError(APIConnectionError):
    """No answer within the timeout (raise `timeout=` for long requests)."""

    def __init__(self, request: httpx.Request) -> None:
        super().__init__(request, message="Request timed out.")


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def _error_detail(body: object | None) -> dict[str, Any]:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return error
    return {}


def make_status_error(response: httpx.Response) -> APIStatusError:
    """The typed error for a non-2xx response, its message taken from the envelope."""
    try:
        body: object | None = response.json()
    except ValueError:
        body = response.text or None
    message = _error_detail(body).get("message")
    if not isinstance(message, str):
        message = f"HTTP {response.status_code}: {response.text[:500] or response.reason_phrase}"
    kind = _STATUS_ERRORS.get(response.status_code)
    if kind is None:
        kind = InternalServerError if response.status_code >= 500 else APIStatusError
    return kind(message, response=response, body=body)
