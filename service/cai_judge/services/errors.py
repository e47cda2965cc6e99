"""Typed errors of the use cases, free of any wire (DESIGN.md §6, §8).

Services raise these; `api/errors.py` maps them to HTTP statuses and the error envelope,
and the gRPC servicer maps the same classes to status codes, so both transports answer a
given situation alike. `type` is the stable, machine-readable kind a client can branch on.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a service raises on purpose."""

    default_type = "error"

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type or self.default_type
        self.param = param
        self.retry_after_s = retry_after_s


class InvalidRequest(ServiceError):
    """The request can never succeed as sent: it names the field and the limit (422)."""

    default_type = "invalid_request"


class NotFound(ServiceError):
    default_type = "not_found"


class Conflict(ServiceError):
    """The request clashes with what is stored, e.g. a reserved constitution id (409)."""

    default_type = "conflict"


class Unauthenticated(ServiceError):
    default_type = "unauthorized"


class PermissionDenied(ServiceError):
    """A valid key that may not do this, e.g. add a constitution without an admin key."""

    default_type = "forbidden"


class RateLimited(ServiceError):
    default_type = "rate_limited"


class Unavailable(ServiceError):
    """Not now, retry elsewhere or later: draining, queue full, cut by shutdown (503).

    Always carries `retry_after_s`: a client's retry with the same idempotency key is the
    intended recovery, never a reason to give up.
    """

    default_type = "unavailable"
