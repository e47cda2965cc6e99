"""Typed errors of the use cases, free of any wire (DESIGN.md §6, §8).

Services raise these; `api/errors.py` maps them to HTTP statuses and the error envelope,
and the gRPC servicer maps the same classes to status codes, so both transports answer a
given situation alike. `type` is the stable, machine-readable kind a client can branch on.
"""

from __future__ import annotations

from cai_judge.store.errors import StoreContended, StoreUnavailable


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


class TooLarge(InvalidRequest):
    """A body over a byte limit (413 over HTTP; INVALID_ARGUMENT over gRPC)."""

    default_type = "request_too_large"


def from_store(error: StoreUnavailable, retry_after_s: int) -> Unavailable:
    """The 503 a store that cannot be reached gets, on every wire: retry later or elsewhere.

    A contended store (concurrent submits from one key outran its retries) is 503 too, with
    its own type: the same retry recovers, and the client can tell the two apart."""
    if isinstance(error, StoreContended):
        return Unavailable(
            f"{error}; nothing was stored: retry after the delay (a job submission with the "
            "same Idempotency-Key is safe to retry)",
            type="store_contended",
            retry_after_s=retry_after_s,
        )
    return Unavailable(
        f"{error}; nothing was changed by this call as far as the service knows: retry "
        "(a job submission with the same Idempotency-Key is safe to retry)",
        type="store_unavailable",
        retry_after_s=retry_after_s,
    )


def from_domain(error: BaseException) -> ServiceError | None:
    """The ServiceError a domain ValueError stands for, or None for anything else.

    The domain raises ValueError subclasses for requests it cannot serve (a calibration
    profile that does not apply, a constitution or template it cannot use); services map
    the ones they expect, and the transports map whatever slips past with this, so a
    domain ValueError reaches a client as 422, never as 500.
    """
    from cai_judge.labeling.calibration_profile import CalibrationError, ProfileMismatch
    from cai_judge.labeling.constitution import ConstitutionError, ConstitutionIdReserved
    from cai_judge.labeling.templates import TemplateError

    message = str(error) or type(error).__name__
    if isinstance(error, ProfileMismatch):
        return InvalidRequest(message, type="calibration_mismatch", param="calibrated")
    if isinstance(error, CalibrationError):
        return InvalidRequest(message, type="calibration_error", param="calibrated")
    if isinstance(error, ConstitutionIdReserved):
        return Conflict(message, type="reserved_id", param="id")
    if isinstance(error, ConstitutionError):
        return InvalidRequest(message, type="invalid_constitution", param="constitution")
    if isinstance(error, TemplateError):
        return InvalidRequest(message, type="template_error", param="constitution")
    return None
