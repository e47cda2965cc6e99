"""The batch-jobs calls' failure timing, against an HTTP-level fake (docs/DESIGN.md §5),
for both clients: what a live server cannot produce on demand, a lost answer followed by a
retry (the whole body again, with the same Idempotency-Key) and a job slower than
`wait_job`'s timeout. Everything else about jobs runs against a real server and a real
redis-server in tests/e2e/test_sdk_live.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import cai_judge_client as sdk
from sdk_support import BASE_URL, Judge, pairs


def status(job_id: str, state: str, total: int, done: int, failed: int = 0) -> dict[str, Any]:
    return {
        "id": job_id, "state": state, "total": total, "done": done, "failed": failed,
        "pairs_per_s": 1.5, "eta_s": None if state != "running" else 3.0,
        "created_at": "2026-11-28T10:00:00Z", "updated_at": "2026-11-28T10:00:05Z",
        "constitution": {"id": "harmless", "version": "v" * 64},
    }  # fmt: skip


def ndjson(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


def lines(request: httpx.Request) -> list[dict[str, Any]]:
    return [json.loads(line) for line in request.content.decode().splitlines()]


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


async def test_wait_job_times_out_with_the_last_status(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        mock.get("/v1/jobs/job-6").mock(
            return_value=httpx.Response(200, json=status("job-6", "running", 4, 1))
        )
        with pytest.raises(TimeoutError, match="1 of 4 pairs"):
            await judge("wait_job", "job-6", poll_interval=0.01, timeout=0.1, progress=False)


async def test_results_evicted_from_a_finished_job_end_with_a_clear_error(judge: Judge) -> None:
    # A succeeded job whose results the server no longer holds: each page comes back
    # empty. The iteration used to re-ask without sleeping (~800 requests/s, for ever).
    served = 0

    def empty_page(request: httpx.Request) -> httpx.Response:
        nonlocal served
        served += 1
        if served > 50:  # the old loop: fail the test instead of spinning for ever
            raise AssertionError("iter_job_results kept asking for results that are gone")
        return httpx.Response(200, text="", headers={"X-Next-Cursor": "2", "X-Job-State":
                                                     "succeeded"})  # fmt: skip

    with respx.mock(base_url=BASE_URL) as mock:
        mock.get("/v1/jobs/job-7").mock(
            return_value=httpx.Response(200, json=status("job-7", "succeeded", 4, 4))
        )
        pages = mock.get("/v1/jobs/job-7/results").mock(side_effect=empty_page)
        with pytest.raises(sdk.JobResultsGone, match="evicted") as raised:
            await judge.collect("iter_job_results", "job-7", cursor=2, poll_interval=0.01)
    assert raised.value.cursor == 2 and pages.call_count == 1
