"""The batch-jobs calls against an HTTP-level fake of the wire contract (docs/DESIGN.md §5,
the briefing's "batch-jobs wire contract"), for both clients.

The service's jobs API (issue 10) is built in parallel and is not in this tree yet; these
respx fakes follow the contract to the letter. Once it lands, every test here except the
retry one (`test_submit_job_retry_resends_the_whole_body_with_the_same_key`, failure timing)
moves to tests/test_sdk_live.py against a real server with a real redis-server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import cai_judge_client as sdk
from sdk_support import BASE_URL, Judge, label_json, pairs


def status(job_id: str, state: str, total: int, done: int, failed: int = 0) -> dict[str, Any]:
    return {
        "id": job_id, "state": state, "total": total, "done": done, "failed": failed,
        "pairs_per_s": 1.5, "eta_s": None if state != "running" else 3.0,
        "created_at": "2026-11-28T10:00:00Z", "updated_at": "2026-11-28T10:00:05Z",
        "constitution": {"id": "harmless", "version": "v" * 64},
    }  # fmt: skip


def ndjson(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


def page(items: list[dict[str, Any]], next_cursor: int, state: str) -> httpx.Response:
    return httpx.Response(
        200, text=ndjson(items),
        headers={"Content-Type": "application/x-ndjson", "X-Next-Cursor": str(next_cursor),
                 "X-Job-State": state},
    )  # fmt: skip


def lines(request: httpx.Request) -> list[dict[str, Any]]:
    return [json.loads(line) for line in request.content.decode().splitlines()]


async def test_submit_job_streams_ndjson_with_the_options_as_query(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/jobs").mock(
            return_value=httpx.Response(202, json=status("job-1", "queued", 5, 0))
        )
        job = await judge(
            "submit_job", iter(pairs(5)), constitution="harmless", principles=4, seed=7,
            idempotency_key="my-run-1",
        )  # fmt: skip
    assert isinstance(job, sdk.Job) and (job.id, job.state, job.total) == ("job-1", "queued", 5)
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/x-ndjson"
    assert request.headers["idempotency-key"] == "my-run-1"
    assert dict(request.url.params) == {
        "constitution": "harmless", "principles": "4", "seed": "7",
        "aggregator": "mean_logodds", "per_principle": "false",
    }  # fmt: skip
    assert lines(request) == pairs(5)


async def test_submit_job_from_a_file_sends_the_file(judge: Judge, tmp_path: Path) -> None:
    source = tmp_path / "pairs.jsonl"
    source.write_text(ndjson(pairs(3)))
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/jobs").mock(
            return_value=httpx.Response(202, json=status("job-2", "queued", 3, 0))
        )
        await judge("submit_job", source, constitution="harmless")
    assert route.calls.last.request.content == source.read_bytes()
    assert route.calls.last.request.headers["idempotency-key"].startswith("ik_")


@pytest.mark.parametrize("from_file", [False, True])
async def test_submit_job_retry_resends_the_whole_body_with_the_same_key(
    judge: Judge, tmp_path: Path, from_file: bool
) -> None:
    many = pairs(2000)  # bigger than one read block, so the body really streams
    source: Any = iter(many)
    if from_file:
        source = tmp_path / "pairs.jsonl"
        source.write_text(ndjson(many))
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/jobs").mock(
            side_effect=[httpx.Response(503, headers={"Retry-After": "0"}), httpx.ReadError("lost"),
                         httpx.Response(202, json=status("job-3", "queued", 2000, 0))]
        )  # fmt: skip
        job = await judge("submit_job", source, constitution="harmless")
    assert job.id == "job-3" and route.call_count == 3
    bodies = [call.request.content for call in route.calls]
    assert bodies[0] == bodies[1] == bodies[2]
    assert lines(route.calls[0].request) == many
    keys = {call.request.headers["idempotency-key"] for call in route.calls}
    assert len(keys) == 1


async def test_a_reused_idempotency_key_is_a_typed_422(judge: Judge) -> None:
    envelope = {"error": {"type": "idempotency_key_reused", "message": "other body", "param": None}}
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/jobs").mock(return_value=httpx.Response(422, json=envelope))
        with pytest.raises(sdk.UnprocessableEntityError) as raised:
            await judge("submit_job", pairs(1), constitution="harmless", idempotency_key="k1")
    assert raised.value.type == "idempotency_key_reused" and route.call_count == 1


async def test_get_cancel_and_unknown_jobs(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        mock.get("/v1/jobs/job-4").mock(
            return_value=httpx.Response(200, json=status("job-4", "running", 10, 4, 1))
        )
        mock.delete("/v1/jobs/job-4").mock(
            return_value=httpx.Response(200, json=status("job-4", "cancelled", 10, 4, 1))
        )
        mock.get("/v1/jobs/nope").mock(
            return_value=httpx.Response(
                404, json={"error": {"type": "not_found", "message": "no job nope", "param": None}}
            )
        )
        job = await judge("get_job", "job-4")
        assert (job.state, job.done, job.failed, job.eta_s) == ("running", 4, 1, 3.0)
        assert not job.finished
        cancelled = await judge("cancel_job", "job-4")
        assert cancelled.state == "cancelled" and cancelled.finished
        with pytest.raises(sdk.NotFoundError):
            await judge("get_job", "nope")


async def test_wait_job_polls_until_finished(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.get("/v1/jobs/job-5").mock(
            side_effect=[
                httpx.Response(200, json=status("job-5", "queued", 4, 0)),
                httpx.Response(200, json=status("job-5", "running", 4, 2)),
                httpx.Response(200, json=status("job-5", "succeeded", 4, 3, 1)),
            ]
        )
        job = await judge("wait_job", "job-5", poll_interval=0.01, progress=False)
    assert job.state == "succeeded" and route.call_count == 3


async def test_wait_job_times_out_with_the_last_status(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        mock.get("/v1/jobs/job-6").mock(
            return_value=httpx.Response(200, json=status("job-6", "running", 4, 1))
        )
        with pytest.raises(TimeoutError, match="1 of 4 pairs"):
            await judge("wait_job", "job-6", poll_interval=0.01, timeout=0.1, progress=False)


async def test_iter_job_results_pages_in_order_and_waits_for_the_prefix(judge: Judge) -> None:
    results = [label_json(f"p{i}") for i in range(5)]
    results[2] = {"id": "p2", "index": 2, "error": {"type": "invalid_pair", "message": "x",
                                                     "param": "response_b"}}  # fmt: skip
    with respx.mock(base_url=BASE_URL) as mock:
        mock.get("/v1/jobs/job-7").mock(
            return_value=httpx.Response(200, json=status("job-7", "running", 5, 2))
        )
        results_route = mock.get(
            "/v1/jobs/job-7/results"
        ).mock(
            side_effect=[
                page(results[0:2], 2, "running"),
                page([], 2, "running"),  # the next pair is not finished yet
                page(results[2:4], 4, "running"),
                page(results[4:5], 5, "succeeded"),
            ]
        )
        got = await judge.collect("iter_job_results", "job-7", page_size=2, poll_interval=0.01)
    assert [r.id for r in got] == ["p0", "p1", "p2", "p3", "p4"]
    assert isinstance(got[2], sdk.PairError) and got[2].index == 2
    cursors = [call.request.url.params["cursor"] for call in results_route.calls]
    assert cursors == ["0", "2", "2", "4"]
    assert {call.request.url.params["limit"] for call in results_route.calls} == {"2"}


async def test_iter_job_results_stops_where_a_cancelled_job_stopped(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        mock.get("/v1/jobs/job-8").mock(
            side_effect=[
                httpx.Response(200, json=status("job-8", "running", 10, 1)),
                httpx.Response(200, json=status("job-8", "cancelled", 10, 1)),
            ]
        )
        route = mock.get("/v1/jobs/job-8/results").mock(
            side_effect=[page([label_json("p0")], 1, "running"), page([], 1, "cancelled"),
                         page([], 1, "cancelled")]
        )  # fmt: skip
        got = await judge.collect("iter_job_results", "job-8", poll_interval=0.01)
    assert [r.id for r in got] == ["p0"] and route.call_count == 3
