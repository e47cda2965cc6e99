"""Retries, timing and idempotency, at the HTTP level (respx), for both clients.

A live server cannot fail on demand with a given status, Retry-After or a dropped
connection at attempt N; these fakes can. Every test runs on `CaiJudge` and `AsyncCaiJudge`.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx
import tenacity

import cai_judge_client as sdk
from cai_judge_client._base_client import RetryPolicy, _RetryAfterOrBackoff, parse_retry_after
from sdk_support import BASE_URL, Judge, label_json, make_client, pairs

OK = {"labels": [label_json("p0")], "usage": {"pairs": 1, "score_units": 2}}


def envelope(type_: str, message: str, param: str | None = None) -> dict[str, object]:
    return {"error": {"type": type_, "message": message, "param": param}}


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried_until_success(judge: Judge, status: int) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(
            side_effect=[
                httpx.Response(status, json=envelope("busy", "try again")),
                httpx.Response(status, json=envelope("busy", "try again")),
                httpx.Response(200, json=OK),
            ]
        )
        answer = await judge("label", pairs(1), constitution="harmless")
    assert route.call_count == 3
    assert answer.labels[0].id == "p0"


async def test_connection_errors_are_retried(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.ReadError("reset"),
                         httpx.Response(200, json=OK)]
        )  # fmt: skip
        await judge("label", pairs(1), constitution="harmless")
    assert route.call_count == 3


async def test_gives_up_after_max_retries_with_a_typed_error(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(
            return_value=httpx.Response(503, json=envelope("queue_full", "queue full (9 of 9)"))
        )
        with pytest.raises(sdk.ServiceUnavailableError) as raised:
            await judge.with_options(max_retries=2)("label", pairs(1), constitution="harmless")
    assert route.call_count == 3
    error = raised.value
    assert error.status_code == 503 and error.type == "queue_full"
    assert error.message == "queue full (9 of 9)"
    assert error.body == envelope("queue_full", "queue full (9 of 9)")
    assert error.request_id == route.calls.last.request.headers["x-request-id"]
    assert "queue full" in str(error) and error.request_id in str(error)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, sdk.BadRequestError), (401, sdk.AuthenticationError),
        (403, sdk.PermissionDeniedError), (404, sdk.NotFoundError),
        (413, sdk.RequestTooLargeError), (422, sdk.UnprocessableEntityError),
    ],
)  # fmt: skip
async def test_client_errors_are_not_retried(
    judge: Judge, status: int, kind: type[sdk.APIStatusError]
) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(
            return_value=httpx.Response(status, json=envelope("x", "no", "pairs.0.id"))
        )
        with pytest.raises(kind) as raised:
            await judge("label", pairs(1), constitution="harmless")
    assert route.call_count == 1
    assert raised.value.param == "pairs.0.id"


async def test_a_server_error_from_the_server_id_wins_over_ours(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        mock.get("/v1/constitutions/x").mock(
            return_value=httpx.Response(404, json=envelope("not_found", "no x"),
                                        headers={"X-Request-Id": "srv-1"})
        )  # fmt: skip
        with pytest.raises(sdk.NotFoundError) as raised:
            await judge("get_constitution", "x")
    assert raised.value.request_id == "srv-1"


async def test_one_idempotency_key_per_call_reused_on_every_retry(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(
            side_effect=[httpx.Response(503), httpx.ConnectError("x"), httpx.Response(200, json=OK),
                         httpx.Response(200, json=OK)]
        )  # fmt: skip
        await judge("label", pairs(1), constitution="harmless")
        await judge("label", pairs(1), constitution="harmless")
    keys = [call.request.headers["idempotency-key"] for call in route.calls]
    request_ids = [call.request.headers["x-request-id"] for call in route.calls]
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert request_ids[0] == request_ids[1] == request_ids[2] != request_ids[3]
    assert all(call.request.headers["authorization"] == "Bearer k" for call in route.calls)


async def test_retry_after_is_honoured(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        mock.post("/v1/labels").mock(
            side_effect=[httpx.Response(429, headers={"Retry-After": "1"}),
                         httpx.Response(200, json=OK)]
        )  # fmt: skip
        started = time.monotonic()
        await judge("label", pairs(1), constitution="harmless")
        waited = time.monotonic() - started
    # The policy's own backoff is 10-50 ms: only Retry-After explains a full second.
    assert 0.95 <= waited < 3.0


async def test_retry_after_is_capped(judge: Judge) -> None:
    capped = judge.with_options(
        retry_policy=RetryPolicy(max_retries=2, initial_delay_s=0.01, max_retry_after_s=0.2)
    )
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(
            side_effect=[httpx.Response(503, headers={"Retry-After": "3600"}),
                         httpx.Response(503, headers={"Retry-After": "3600"}),
                         httpx.Response(200, json=OK)]
        )  # fmt: skip
        started = time.monotonic()
        await capped("label", pairs(1), constitution="harmless")
        waited = time.monotonic() - started
    assert route.call_count == 3
    assert 0.38 <= waited < 2.0


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({})) is None
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(httpx.Headers({"Retry-After": later})) or 0) <= 31


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(initial_delay_s=0.5, max_delay_s=20.0)
    wait = _RetryAfterOrBackoff(policy)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (9, 20.0)]:
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        waits = [wait(state) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.7 and min(waits) < ceiling * 0.3  # spread: jittered


async def test_timeouts_raise_api_timeout_error_after_retries(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(sdk.APITimeoutError):
            await judge.with_options(max_retries=1)("label", pairs(1), constitution="harmless")
    assert route.call_count == 2


@pytest.fixture
def silent_server() -> tuple[str, list[socket.socket]]:
    """A loopback socket that accepts connections and never answers: a hung judge."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    listener.close()
    for conn in accepted:
        conn.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_hung_server_times_out_on_every_attempt(
    kind: str, silent_server: tuple[str, list[socket.socket]]
) -> None:
    url, accepted = silent_server
    client = make_client(kind, base_url=url, timeout=0.3, max_retries=1)
    started = time.monotonic()
    with pytest.raises(sdk.APITimeoutError) as raised:
        await Judge(kind, client)("label", pairs(1), constitution="harmless")
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 3.0  # two attempts of 0.3 s, plus a short backoff
    assert len(accepted) >= 1
    assert raised.value.request_id is not None
    client.close() if isinstance(client, sdk.CaiJudge) else await client.close()


async def test_max_retries_zero_sends_once(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(return_value=httpx.Response(503))
        with pytest.raises(sdk.ServiceUnavailableError):
            await judge.with_options(max_retries=0)("label", pairs(1), constitution="harmless")
    assert route.call_count == 1


async def test_create_constitution_does_not_retry_a_conflict(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/constitutions").mock(
            return_value=httpx.Response(409, json=envelope("conflict", "harmless is reserved"))
        )
        with pytest.raises(sdk.ConflictError):
            await judge("create_constitution", {"id": "harmless", "principles": []})
    assert route.call_count == 1
