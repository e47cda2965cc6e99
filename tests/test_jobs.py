"""Batch jobs in process (httpx ASGI) on the tiny engine and a real redis-server: the wire
contract of issue 10, idempotency, input order and cursors, cancel, fail-closed submission,
and the store's at-least-once rules (idempotent writes, XAUTOCLAIM takeover)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from cai_judge.api.app import create_app
from cai_judge.engine.vllm_local import VllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from cai_judge.store import keys
from cai_judge.store.jobs import JobRecord, RedisJobStore
from tests.support.redis_server import free_port

pytestmark = pytest.mark.engine

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
STATUS_FIELDS = {
    "id", "state", "total", "done", "failed", "pairs_per_s", "eta_s", "created_at",
    "updated_at", "constitution",
}  # fmt: skip


def pair(i: int) -> dict[str, str]:
    return {
        "id": f"p{i}",
        "prompt": f"Question {i}?",
        "response_a": f"Answer {i}, kindly.",
        "response_b": f"Reply {i}, rudely.",
    }


@pytest.fixture
def client(tiny_engine: VllmEngine, redis_url: str) -> Client:
    @asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
        values: dict[str, Any] = {
            "max_model_len": 1024, "redis_url": redis_url, "jobs_chunk_pairs": 4,
            "jobs_claim_idle_s": 2.0, **settings,
        }  # fmt: skip
        app = create_app(
            Settings(**values), engine=tiny_engine, registry=ConstitutionRegistry.with_builtins()
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", timeout=60
            ) as http:
                http.app = app  # type: ignore[attr-defined]
                yield http

    return make


async def wait_finished(
    http: httpx.AsyncClient, job_id: str, limit_s: float = 180
) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = (await http.get(f"/v1/jobs/{job_id}")).json()
        if status["state"] in ("succeeded", "failed", "cancelled"):
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished in {limit_s} s: {status}")


async def read_all(http: httpx.AsyncClient, job_id: str, limit: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    cursor = 0
    for _ in range(100):
        response = await http.get(f"/v1/jobs/{job_id}/results?cursor={cursor}&limit={limit}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        page = [json.loads(line) for line in response.text.splitlines()]
        assert int(response.headers["X-Next-Cursor"]) == cursor + len(page)
        assert len(page) <= limit
        lines.extend(page)
        cursor = int(response.headers["X-Next-Cursor"])
        if response.headers["X-Job-State"] == "succeeded" and not page:
            break
    return lines


async def test_a_job_labels_every_pair_in_input_order(client: Client):
    pairs = [pair(i) for i in range(10)]
    pairs[3] = {"id": "bad", "prompt": "x", "response_a": "", "response_b": "y"}
    async with client() as http:
        response = await http.post(
            "/v1/jobs", json={"constitution": "harmless", "pairs": pairs, "principles": 2}
        )
        assert response.status_code == 202, response.text
        status = response.json()
        assert set(status) == STATUS_FIELDS
        assert status["state"] == "queued" and status["total"] == 10
        assert status["constitution"]["id"] == "harmless"

        final = await wait_finished(http, status["id"])
        assert (final["state"], final["done"], final["failed"]) == ("succeeded", 9, 1)
        assert final["pairs_per_s"] > 0 and final["eta_s"] == 0

        results = await read_all(http, status["id"], limit=3)
        assert [r["id"] for r in results] == [p["id"] for p in pairs]
        assert results[3]["index"] == 3
        assert results[3]["error"]["param"] == "pairs.3.response_a"

        # Each line is what /v1/labels answers for that pair.
        direct = await http.post(
            "/v1/labels", json={"constitution": "harmless", "pairs": pairs, "principles": 2}
        )
        assert results == direct.json()["labels"]

        metrics = (await http.get("/metrics")).text
        assert 'cai_judge_job_pairs_total{result="done"} 9.0' in metrics
        assert 'cai_judge_job_pairs_total{result="failed"} 1.0' in metrics


async def test_cursors_return_only_the_finished_prefix(client: Client, redis_url: str):
    async with client(jobs_consumer=False) as http:
        body = {"constitution": "harmless", "pairs": [pair(i) for i in range(6)], "principles": 1}
        job = (await http.post("/v1/jobs", json=body)).json()
        store = RedisJobStore(Redis.from_url(redis_url), ttl_s=60)
        # Results for 0, 1 and 3 exist, 2 does not: a reader gets 0 and 1 only.
        await store.write_results(job["id"], [(i, True, b'{"i":%d}' % i) for i in (0, 1, 3)])
        response = await http.get(f"/v1/jobs/{job['id']}/results?cursor=0&limit=10")
        assert response.text.splitlines() == ['{"i":0}', '{"i":1}']
        assert response.headers["X-Next-Cursor"] == "2"
        assert response.headers["X-Job-State"] == "running"
        later = await http.get(f"/v1/jobs/{job['id']}/results?cursor=3&limit=10")
        assert later.text.splitlines() == ['{"i":3}']
        assert later.headers["X-Next-Cursor"] == "4"
        outside = await http.get(f"/v1/jobs/{job['id']}/results?cursor=7")
        assert outside.status_code == 422 and outside.json()["error"]["param"] == "cursor"
        await store.redis.aclose()


async def test_idempotency_key_rules(client: Client):
    async with client(jobs_consumer=False) as http:
        body = {"constitution": "harmless", "pairs": [pair(0), pair(1)]}
        first = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        again = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]

        other = {**body, "pairs": [pair(0)]}
        reused = await http.post("/v1/jobs", json=other, headers={"Idempotency-Key": "k-1"})
        assert reused.status_code == 422
        assert reused.json()["error"]["type"] == "idempotency_key_reused"

        fresh = await http.post("/v1/jobs", json=body)
        assert fresh.json()["id"] != first.json()["id"]
        too_long = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k" * 201})
        assert too_long.status_code == 422


async def test_ndjson_upload_streams_and_reports_bad_lines(client: Client, redis_url: str):
    async def body() -> AsyncIterator[bytes]:
        yield (json.dumps(pair(0)) + "\n" + json.dumps(pair(1))[:20]).encode()
        yield (json.dumps(pair(1))[20:] + "\nnot json\n\n").encode()
        yield json.dumps(pair(2)).encode()  # no final newline

    async with client() as http:
        response = await http.post(
            "/v1/jobs?constitution=harmless&principles=1&seed=3&per_principle=true",
            content=body(),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["total"] == 4
        final = await wait_finished(http, job["id"])
        assert (final["done"], final["failed"]) == (3, 1)
        results = await read_all(http, job["id"], limit=100)
        assert [r.get("id") for r in results[:2]] == ["p0", "p1"]
        assert (
            results[2]["error"]["param"] == "pairs.2" and "JSON" in results[2]["error"]["message"]
        )
        assert results[3]["seed"] == 3 and len(results[3]["per_principle"]) == 1

        bad_options = await http.post(
            "/v1/jobs?constitution=harmless&principles=0",
            content=b"{}",
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert bad_options.status_code == 422
        assert bad_options.json()["error"]["param"] == "principles"
        unknown = await http.post(
            "/v1/jobs?constitution=nope", content=b"{}", headers={"Content-Type": NDJSON}
        )
        assert unknown.status_code == 404
    # Refused uploads leave no input behind.
    redis = Redis.from_url(redis_url)
    leftovers = [k for k in await redis.keys("cai:v1:job:*:pairs")]
    assert leftovers == []
    await redis.aclose()


NDJSON = "application/x-ndjson"


async def test_cancel_and_unknown_jobs(client: Client):
    async with client(jobs_consumer=False) as http:
        job = (await http.post("/v1/jobs", json={"constitution": "harmless",
                                                 "pairs": [pair(0)]})).json()  # fmt: skip
        cancelled = await http.delete(f"/v1/jobs/{job['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert (await http.get(f"/v1/jobs/{job['id']}")).json()["state"] == "cancelled"
        again = await http.delete(f"/v1/jobs/{job['id']}")
        assert again.json()["state"] == "cancelled"
        for method, path in (("GET", "/v1/jobs/nope"), ("GET", "/v1/jobs/nope/results"),
                             ("DELETE", "/v1/jobs/nope")):  # fmt: skip
            response = await http.request(method, path)
            assert response.status_code == 404
            assert set(response.json()["error"]) == {"type", "message", "param"}
    # A consumer that meets the cancelled job's chunk acknowledges it and labels nothing.
    async with client() as http:
        await asyncio.sleep(2)
        status = (await http.get(f"/v1/jobs/{job['id']}")).json()
        assert (status["state"], status["done"]) == ("cancelled", 0)


async def test_submitting_with_redis_unreachable_is_503(tiny_engine: VllmEngine):
    settings = Settings(max_model_len=1024, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                        jobs_consumer=False)  # fmt: skip
    app = create_app(settings, engine=tiny_engine, registry=ConstitutionRegistry.with_builtins())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.post(
                "/v1/jobs", json={"constitution": "harmless", "pairs": [pair(0)]}
            )
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "store_unavailable"
            assert response.headers["Retry-After"]
            labels = await http.post(
                "/v1/labels", json={"constitution": "harmless", "pairs": [pair(0)]}
            )
            assert labels.status_code == 200  # the cache fails open, jobs fail closed


async def test_jobs_without_redis_say_how_to_enable_them(tiny_engine: VllmEngine):
    app = create_app(
        Settings(max_model_len=1024), engine=tiny_engine,
        registry=ConstitutionRegistry.with_builtins(),
    )  # fmt: skip
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.post(
                "/v1/jobs", json={"constitution": "harmless", "pairs": [pair(0)]}
            )
            assert response.status_code == 503
            assert "CAI_JUDGE_REDIS_URL" in response.json()["error"]["message"]
            schema = (await http.get("/openapi.json")).json()
            assert "/v1/jobs" not in schema["paths"]


def record(job_id: str, total: int) -> JobRecord:
    now = time.time()
    return JobRecord(job_id, "queued", total, 0, 0, now, now, None, "harmless", "v", {})


async def test_result_writes_are_idempotent(redis_url: str):
    store = RedisJobStore(Redis.from_url(redis_url), ttl_s=60)
    await store.append_lines("j1", [b"{}"] * 3)
    await store.create(record("j1", 3), 2, None, "digest")
    assert await store.write_results("j1", [(0, True, b"a"), (1, False, b"b")]) == (1, 1, "running")
    # The same chunk delivered again (at least once) writes and counts nothing.
    assert await store.write_results("j1", [(0, True, b"x"), (1, False, b"y")]) == (0, 0, "running")
    assert await store.results("j1", 0, 3) == [b"a", b"b"]
    assert await store.write_results("j1", [(2, True, b"c")]) == (1, 0, "succeeded")
    job = await store.get("j1")
    assert job is not None and (job.done, job.failed, job.state) == (2, 1, "succeeded")
    assert not await store.redis.exists(keys.job_pairs("j1"))  # input dropped when done
    assert 0 < await store.redis.ttl(keys.job_results("j1")) <= 60
    assert (await store.state_counts())["succeeded"] == 1
    await store.redis.aclose()


async def test_a_dead_consumers_chunk_is_reclaimed(redis_url: str):
    store = RedisJobStore(Redis.from_url(redis_url), ttl_s=60)
    await store.ensure_group()
    await store.append_lines("j2", [b"{}"] * 5)
    await store.create(record("j2", 5), 2, None, "digest")
    taken = await store.read_new("dead", count=1, block_ms=10)
    assert [(t.start, t.end) for t in taken] == [(0, 2)]
    assert await store.reclaim("alive", min_idle_ms=200, count=5) == []  # not idle yet
    await asyncio.sleep(0.3)
    reclaimed = await store.reclaim("alive", min_idle_ms=200, count=5)
    assert reclaimed == taken
    # Renewing keeps a live consumer's chunk from being taken again.
    await store.renew("alive", taken[0].message_id)
    assert await store.reclaim("third", min_idle_ms=200, count=5) == []
    await store.ack(taken[0].message_id)
    assert await store.group_backlog() == (2, 0)  # two unread chunks left, none pending
    await store.redis.aclose()
