"""One place maps the services' typed errors to gRPC status codes (DESIGN.md §6, §8).

The HTTP half is `api/errors.py`; both map the same classes of `services/errors.py`, so a
situation gets the same answer on either wire: 422 is INVALID_ARGUMENT, 404 NOT_FOUND,
401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 409 ALREADY_EXISTS, 429 RESOURCE_EXHAUSTED and
503 UNAVAILABLE.

Retry information goes two ways, both in the trailing metadata:

- `grpc-status-details-bin`: a `google.rpc.Status` (gRPC's richer error model, AIP-193)
  holding an `ErrorInfo` (reason = the HTTP envelope's `type`, e.g. `queue_full`, and
  metadata `param`) and, for RESOURCE_EXHAUSTED and UNAVAILABLE, a `RetryInfo` with the
  delay. This is what gRPC client libraries in every language already parse
  (`grpc_status.rpc_status.from_call` in Python, `status.FromError` in Go), so a client
  gets the machine-readable error kind and the delay without knowing our conventions.
- `retry-after`: the same delay in whole seconds as a plain ASCII entry, mirroring HTTP's
  `Retry-After`, for clients (and shell tools) that do not decode protobuf details.

Metrics record a gRPC call under the HTTP status its situation gets over HTTP (`http_code`):
the dashboards and alerts then read both protocols alike (5xx other than 503 is a server
fault on either wire), and the `protocol` label tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from cai_judge.services.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceError,
    Unauthenticated,
    Unavailable,
    from_domain,
    from_store,
)
from cai_judge.store.errors import StoreUnavailable

ERROR_DOMAIN = "cai-judge"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRY_AFTER_KEY = "retry-after"

GRPC_STATUS: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}

# The HTTP status the same situation gets over HTTP (api/errors.py), for the metrics;
# the codes no service raises follow grpc-gateway's canonical mapping (CANCELLED is
# nginx's 499 "client closed request", as the HTTP route records it).
HTTP_EQUIVALENT: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_code(code: grpc.StatusCode) -> int:
    return HTTP_EQUIVALENT.get(code, 500)


@dataclass(frozen=True, slots=True)
class GrpcError:
    """What `context.abort` needs: the code, the message, the trailing metadata."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def status_code_of(error: ServiceError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in GRPC_STATUS:
            return GRPC_STATUS[kind]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL


def _packed(message: error_details_pb2.ErrorInfo | error_details_pb2.RetryInfo) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_grpc(error: ServiceError) -> GrpcError:
    code = status_code_of(error)
    info = error_details_pb2.ErrorInfo(
        reason=error.type,
        domain=ERROR_DOMAIN,
        metadata={"param": error.param} if error.param else {},
    )
    details = [_packed(info)]
    metadata: list[tuple[str, str | bytes]] = []
    retryable = code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
    if retryable and error.retry_after_s is not None:
        delay = duration_pb2.Duration(seconds=error.retry_after_s)
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
        metadata.append((RETRY_AFTER_KEY, str(error.retry_after_s)))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    metadata.append((STATUS_DETAILS_KEY, status.SerializeToString()))
    return GrpcError(code, error.message, tuple(metadata))


def domain_to_grpc(error: BaseException, retry_after_s: int = 2) -> GrpcError | None:
    """A domain ValueError as the same status HTTP gives it (422: INVALID_ARGUMENT), and a
    store that cannot be reached as UNAVAILABLE (503), never INTERNAL; None for anything
    else (a bug, answered INTERNAL and logged)."""
    if isinstance(error, StoreUnavailable):
        return to_grpc(from_store(error, retry_after_s))
    mapped = from_domain(error)
    return None if mapped is None else to_grpc(mapped)
