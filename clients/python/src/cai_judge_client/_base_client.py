"""One shared base for the sync and async clients, after openai-python's `_base_client.py`.

`BaseClient` holds everything that does not block: configuration (arguments, then the
environment), headers, how a request is built, and the retry policy. `SyncAPIClient` and
`AsyncAPIClient` only differ in how they send and sleep.

Retries (docs/DESIGN.md §6, the README's error table) run on tenacity rather than a hand
loop: `Retrying` and `AsyncRetrying` take the same stop/wait/retry policy, so both clients
share one. httpx's own transport retries were not enough: they cover connection failures
only, not 408/409/429/5xx, and have no backoff. Each logical call gets one Idempotency-Key
(and one X-Request-Id) before the first attempt and sends the same ones on every retry, so
a job submitted twice because the first answer was lost is still one job.
"""

from __future__ import annotations

import email.utils
import logging
import os
import platform
import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx
import tenacity

from cai_judge_client import _constants as c
from cai_judge_client._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    make_status_error,
)
from cai_judge_client._version import __version__

if TYPE_CHECKING:
    from typing import Self  # only read by type checkers: the SDK still runs on 3.10

logger = logging.getLogger("cai_judge_client")

HttpClientT = TypeVar("HttpClientT", httpx.Client, httpx.AsyncClient)
TimeoutTypes = float | httpx.Timeout | None


class _NotGiven:
    """Tells "not passed" apart from None (which means "no timeout" for `timeout=`)."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to wait; `with_options(retry_policy=...)` changes it."""

    max_retries: int = c.DEFAULT_MAX_RETRIES
    initial_delay_s: float = c.INITIAL_RETRY_DELAY_S
    max_delay_s: float = c.MAX_RETRY_DELAY_S
    max_retry_after_s: float = c.MAX_RETRY_AFTER_S
    retry_statuses: frozenset[int] = c.RETRYABLE_STATUSES


@dataclass(frozen=True)
class RequestOptions:
    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Called once per attempt, so a streamed body is sent whole again on a retry.
    content: Callable[[], Iterable[bytes] | AsyncIterable[bytes]] | None = None
    timeout: Any = NOT_GIVEN
    idempotency_key: str | None = None
    # Statuses this call retries, when not the policy's (creating a constitution does not
    # retry 409: there it means a reserved id, which no retry clears).
    retry_statuses: frozenset[int] | None = None


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from `Retry-After` (delta-seconds or an HTTP date), or None."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # neither form: fall back to our own backoff
    return max(0.0, parsed.timestamp() - time.time())


class _RetryAfterOrBackoff(tenacity.wait.wait_base):
    """The server's Retry-After (up to a cap) when it sends one; else exponential backoff
    with full jitter, so clients that failed together do not retry together."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = tenacity.wait_random_exponential(
            multiplier=policy.initial_delay_s, max=policy.max_delay_s
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, APIStatusError):
            retry_after = parse_retry_after(error.response.headers)
            if retry_after is not None:
                return min(retry_after, self.policy.max_retry_after_s)
        return float(self.backoff(retry_state))


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    error = retry_state.outcome.exception() if retry_state.outcome else None
    wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
    logger.info("retrying in %.2f s after attempt %d: %s", wait, retry_state.attempt_number, error)


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


class BaseClient(Generic[HttpClientT]):
    _http: HttpClientT

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        timeout: TimeoutTypes,
        retry_policy: RetryPolicy,
        default_headers: Mapping[str, str] | None,
    ) -> None:
        resolved = base_url or _env(c.BASE_URL_ENV) or c.DEFAULT_BASE_URL
        self.base_url = resolved.rstrip("/")
        self.api_key = api_key if api_key is not None else _env(c.API_KEY_ENV)
        self.timeout = timeout
        self.retry_policy = retry_policy
        self.default_headers = dict(default_headers or {})

    # What with_options() copies; subclasses pass these back to their constructor.
    def _settings(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "api_key": self.api_key,
            "timeout": self.timeout,
            "retry_policy": self.retry_policy,
            "default_headers": self.default_headers,
        }

    def _overridden(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        timeout: Any,
        max_retries: int | None,
        retry_policy: RetryPolicy | None,
        default_headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        settings = self._settings()
        if base_url is not None:
            settings["base_url"] = base_url
        if api_key is not None:
            settings["api_key"] = api_key
        if timeout is not NOT_GIVEN:
            settings["timeout"] = timeout
        policy: RetryPolicy = retry_policy or settings["retry_policy"]
        if max_retries is not None:
            policy = RetryPolicy(**{**policy.__dict__, "max_retries": max_retries})
        settings["retry_policy"] = policy
        if default_headers is not None:
            settings["default_headers"] = {**self.default_headers, **default_headers}
        return settings

    @property
    def user_agent(self) -> str:
        return f"cai-judge-client/{__version__} python/{platform.python_version()}"

    def _headers(
        self, options: RequestOptions, idempotency_key: str, request_id: str
    ) -> dict[str, str]:
        headers = {
            "User-Agent": self.user_agent,
            "Accept": "application/json",
            c.REQUEST_ID_HEADER: request_id,
            **self.default_headers,
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if options.method.upper() != "GET":
            headers[c.IDEMPOTENCY_HEADER] = idempotency_key
        headers.update(options.headers)
        return headers

    def _build_request(
        self, options: RequestOptions, idempotency_key: str, request_id: str
    ) -> httpx.Request:
        timeout = self.timeout if options.timeout is NOT_GIVEN else options.timeout
        content = options.content() if options.content is not None else None
        return self._http.build_request(
            options.method,
            f"{self.base_url}{options.path}",
            json=options.json,
            params=options.params,
            content=content,
            headers=self._headers(options, idempotency_key, request_id),
            timeout=timeout,
        )

    def _retry_kwargs(self, options: RequestOptions) -> dict[str, Any]:
        policy = self.retry_policy
        statuses = (
            options.retry_statuses if options.retry_statuses is not None else policy.retry_statuses
        )

        def retryable(error: BaseException) -> bool:
            if isinstance(error, APIStatusError):
                return error.status_code in statuses
            return isinstance(error, APIConnectionError)

        return {
            "stop": tenacity.stop_after_attempt(policy.max_retries + 1),
            "wait": _RetryAfterOrBackoff(policy),
            "retry": tenacity.retry_if_exception(retryable),
            "before_sleep": _log_retry,
            "reraise": True,
        }

    @staticmethod
    def _new_ids(options: RequestOptions) -> tuple[str, str]:
        return options.idempotency_key or f"ik_{uuid.uuid4().hex}", f"req_{uuid.uuid4().hex}"


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise make_status_error(response)
    return response


class SyncAPIClient(BaseClient[httpx.Client]):
    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: TimeoutTypes = c.DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        policy = retry_policy or RetryPolicy()
        if max_retries is not None:
            policy = RetryPolicy(**{**policy.__dict__, "max_retries": max_retries})
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            retry_policy=policy,
            default_headers=default_headers,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(limits=c.DEFAULT_CONNECTION_LIMITS)

    def with_options(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: Any = NOT_GIVEN,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> Self:
        """A copy with some settings changed; it shares this client's connection pool."""
        settings = self._overridden(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            retry_policy=retry_policy,
            default_headers=default_headers,
        )
        copy = type(self)(**settings, http_client=self._http)
        return copy

    def request(self, options: RequestOptions) -> httpx.Response:
        idempotency_key, request_id = self._new_ids(options)
        for attempt in tenacity.Retrying(**self._retry_kwargs(options)):
            with attempt:
                request = self._build_request(options, idempotency_key, request_id)
                try:
                    response = self._http.send(request)
                except httpx.TimeoutException as error:
                    raise APITimeoutError(request) from error
                except httpx.TransportError as error:
                    raise APIConnectionError(
                        request, message=f"Connection error: {error}"
                    ) from error
                return _check(response)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncAPIClient(BaseClient[httpx.AsyncClient]):
    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: TimeoutTypes = c.DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        policy = retry_policy or RetryPolicy()
        if max_retries is not None:
            policy = RetryPolicy(**{**policy.__dict__, "max_retries": max_retries})
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            retry_policy=policy,
            default_headers=default_headers,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(limits=c.DEFAULT_CONNECTION_LIMITS)

    def with_options(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: Any = NOT_GIVEN,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> Self:
        """A copy with some settings changed; it shares this client's connection pool."""
        settings = self._overridden(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            retry_policy=retry_policy,
            default_headers=default_headers,
        )
        return type(self)(**settings, http_client=self._http)

    async def request(self, options: RequestOptions) -> httpx.Response:
        idempotency_key, request_id = self._new_ids(options)
        async for attempt in tenacity.AsyncRetrying(**self._retry_kwargs(options)):
            with attempt:
                request = self._build_request(options, idempotency_key, request_id)
                try:
                    response = await self._http.send(request)
                except httpx.TimeoutException as error:
                    raise APITimeoutError(request) from error
                except httpx.TransportError as error:
                    raise APIConnectionError(
                        request, message=f"Connection error: {error}"
                    ) from error
                return _check(response)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
