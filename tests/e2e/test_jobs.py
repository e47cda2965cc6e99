"""Batch jobs in process (httpx ASGI) on the tiny engine and a real redis-server: the wire
contract (DESIGN.md §5), idempotency, input order and cursors, cancel, fail-closed submission.
The store's at-least-once rules (idempotent writes, XAUTOCLAIM takeover) need no engine:
tests/store/test_jobs_store.py."""

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
from cai_judge.engine.base import EngineUnavailable, ScoreUnitsFailed
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.services.job_consumer import JobConsumer
from cai_judge.services.security import hash_api_key
from cai_judge.settings import Settings
from cai_judge.store import keys
from cai_judge.store.jobs import JobRecord, RedisJobStore
from cai_judge.testing.ports import free_port

pytestmark = pytest.mark.engine

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
FINAL = ("succeeded", "succeeded_with_errors", "failed", "cancelled")
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
        if status["state"] in FINAL:
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
        if response.headers["X-Job-State"] in FINAL and not page:
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
        assert (final["state"], final["done"], final["failed"]) == ("succeeded_with_errors", 9, 1)
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
    # Refused uploads leave no input behind: also one refused after lines were stored.
    async with client(jobs_max_pairs=5) as http:
        http.app.state.services.jobs.upload_batch_lines = 2  # type: ignore[attr-defined]
        appended: list[int] = []
        store = http.app.state.services.jobs.store  # type: ignore[attr-defined]
        append = store.append_lines

        async def counting(job_id: str, lines: Any) -> None:
            appended.append(len(lines))
            await append(job_id, lines)

        store.append_lines = counting
        body = "".join(json.dumps(pair(i)) + "\n" for i in range(8)).encode()
        over = await http.post(
            "/v1/jobs?constitution=harmless", content=body, headers={"Content-Type": NDJSON}
        )
        assert over.status_code == 422 and over.json()["error"]["type"] == "too_many_pairs"
        assert "5 pairs per job" in over.json()["error"]["message"]
        assert appended == [2, 2]  # lines were in Redis when the sixth pair was refused
    redis = Redis.from_url(redis_url)
    assert await redis.keys("cai:v1:job:*:pairs") == []
    # Only the one accepted job (finished, so its input is gone) is in Redis.
    assert len([k for k in await redis.keys("cai:v1:job:*") if k.count(b":") == 3]) == 1
    await redis.aclose()


NDJSON = "application/x-ndjson"


async def test_cancel_and_unknown_jobs(client: Client, redis_url: str):
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
    redis = Redis.from_url(redis_url)
    assert await redis.xlen(keys.JOBS_STREAM) == 1  # its chunk is still queued
    async with client() as http:
        deadline = time.monotonic() + 30
        while await redis.xlen(keys.JOBS_STREAM) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        status = (await http.get(f"/v1/jobs/{job['id']}")).json()
        assert (status["state"], status["done"]) == ("cancelled", 0)
    # Acknowledged (and deleted): nothing left on the stream, nothing pending.
    assert await redis.xlen(keys.JOBS_STREAM) == 0
    assert (await redis.xpending(keys.JOBS_STREAM, keys.JOBS_GROUP))["pending"] == 0
    assert not await redis.exists(keys.job_results(job["id"]))
    await redis.aclose()


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


async def test_a_job_stored_before_the_cot_options_still_labels(client: Client, redis_url: str):
    """A record written before `calibrated`, `mode` and `cot_max_tokens` existed (and with
    no `constitution` in its options) loads through LabelOptions.from_dict's defaults."""
    spec = ConstitutionRegistry.with_builtins().resolve("harmless")
    old_options = {"principles": 2, "seed": 0, "aggregator": "mean_logodds", "per_principle": False}
    async with client():
        store = RedisJobStore(Redis.from_url(redis_url), ttl_s=60)
        await store.append_lines("old-job", [json.dumps(pair(i)).encode() for i in range(3)])
        now = time.time()
        old = JobRecord(
            "old-job", "queued", 3, 0, 0, now, now, None, spec.id, spec.version, old_options
        )
        await store.create(old, 4, None, "digest")
        deadline = time.monotonic() + 180
        while (job := await store.get("old-job")) is not None and job.state not in FINAL:
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.2)
        assert job is not None and job.state == "succeeded", job
        results = [json.loads(line) for line in await store.results("old-job", 0, 3)]
        await store.redis.aclose()
    assert [r["id"] for r in results] == ["p0", "p1", "p2"]
    for label in results:
        assert label["selection"] == 2 and len(label["principles"]) == 2
        assert label["constitution"] == {"id": spec.id, "version": spec.version}
        assert "mode" not in label and label.get("calibration") is None  # plain, uncalibrated


# -- nothing loops, limits, owners, pages, reclaim -----------------------------------


async def no_job_keys(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    assert await redis.keys("cai:v1:job:*") == []
    assert await redis.exists(keys.JOBS_STREAM) == 0 or await redis.xlen(keys.JOBS_STREAM) == 0
    await redis.aclose()


@pytest.mark.parametrize(
    ("options", "param", "kind"),
    [
        ({"calibrated": True}, "calibrated", "calibration_unavailable"),
        ({"mode": "cot", "cot_max_tokens": 16}, "cot_max_tokens", "cot_tokens_over_limit"),
        ({"mode": "cot", "calibrated": True}, "calibrated", "calibration_unavailable"),
    ],
)
async def test_options_the_labeler_refuses_are_refused_at_submit(
    client: Client, redis_url: str, options: dict[str, Any], param: str, kind: str
):
    """The same checks as /v1/labels, before anything is stored (before the fix: 202, and
    the job's chunks were refused and redelivered forever)."""
    async with client(max_cot_tokens=8, jobs_consumer=False) as http:
        body = {"constitution": "harmless", "pairs": [pair(0), pair(1)], **options}
        labels = await http.post("/v1/labels", json=body)
        job = await http.post("/v1/jobs", json=body)
        assert labels.status_code == job.status_code == 422, job.text
        assert job.json()["error"] == labels.json()["error"]
        assert (job.json()["error"]["param"], job.json()["error"]["type"]) == (param, kind)
        query = "&".join(f"{k}={str(v).lower()}" for k, v in options.items())
        upload = await http.post(
            f"/v1/jobs?constitution=harmless&{query}",
            content=json.dumps(pair(0)).encode(),
            headers={"Content-Type": NDJSON},
        )
        assert upload.status_code == 422 and upload.json()["error"]["param"] == param
    await no_job_keys(redis_url)


async def test_a_chunk_refused_for_good_is_written_once_as_errors_and_acked(
    client: Client, redis_url: str
):
    """Over the token budget: every chunk refused. Each pair gets the refusal, the chunks
    are acknowledged and the job ends `failed` (before the fix: `running` forever)."""
    async with client(max_tokens_per_request=20) as http:
        body = {"constitution": "harmless", "pairs": [pair(i) for i in range(6)], "principles": 1}
        job = (await http.post("/v1/jobs", json=body)).json()
        final = await wait_finished(http, job["id"], limit_s=30)
        assert (final["state"], final["done"], final["failed"]) == ("failed", 0, 6)
        results = await read_all(http, job["id"], limit=100)
        assert [r["index"] for r in results] == list(range(6))
        assert [r["id"] for r in results] == [f"p{i}" for i in range(6)]
        for r in results:
            assert r["error"]["type"] == "request_too_large"
            assert r["error"]["param"] == f"pairs.{r['index']}"
            assert "20 tokens per request" in r["error"]["message"]
    redis = Redis.from_url(redis_url)
    assert (await redis.xpending(keys.JOBS_STREAM, keys.JOBS_GROUP))["pending"] == 0
    assert await redis.xlen(keys.JOBS_STREAM) == 0
    await redis.aclose()


async def test_a_chunk_delivered_too_often_goes_to_the_dead_letter(client: Client, redis_url: str):
    async with client(jobs_consumer=False) as http:
        body = {"constitution": "harmless", "pairs": [pair(i) for i in range(6)], "principles": 1}
        job = (await http.post("/v1/jobs", json=body)).json()
    store = RedisJobStore(Redis.from_url(redis_url), ttl_s=60)
    await store.ensure_group()
    # The first chunk (0-4) is taken and dropped by five consumers that die in turn.
    (task,) = await store.read_new("dead-0", count=1, block_ms=10)
    for n in range(1, 5):
        await asyncio.sleep(0.02)
        (task,) = await store.reclaim(f"dead-{n}", min_idle_ms=10, count=1)
        assert task.deliveries == n + 1
    await store.note_chunk_failure(task, "RuntimeError: boom")
    await asyncio.sleep(0.6)
    async with client(jobs_claim_idle_s=0.5, jobs_max_deliveries=5) as http:
        final = await wait_finished(http, job["id"], limit_s=60)
        assert (final["state"], final["done"], final["failed"]) == ("succeeded_with_errors", 2, 4)
        results = await read_all(http, job["id"], limit=100)
        for r in results[:4]:
            assert r["error"]["type"] == "chunk_failed"
            assert "given up after 5 deliveries" in r["error"]["message"]
            assert "RuntimeError: boom" in r["error"]["message"]
        assert all("error" not in r for r in results[4:])
    dead = await store.redis.xrange(keys.JOBS_DEAD_LETTER)
    assert len(dead) == 1
    fields = dead[0][1]
    assert (fields[b"job"].decode(), fields[b"start"], fields[b"end"]) == (job["id"], b"0", b"4")
    assert fields[b"deliveries"] == b"6" and b"boom" in fields[b"reason"]
    assert (await store.redis.xpending(keys.JOBS_STREAM, keys.JOBS_GROUP))["pending"] == 0
    await store.redis.aclose()


class FlakyEngine:
    """The tiny engine, but its first `fail` score calls find no server (EngineUnavailable
    per unit, as a remote fleet that is down answers): the jobs logic is under test."""

    def __init__(self, inner: VllmEngine, fail: int) -> None:
        self.inner = inner
        self.fail = fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def score(self, units: Any) -> Any:
        if self.fail > 0:
            self.fail -= 1
            raise ScoreUnitsFailed([EngineUnavailable("no vLLM server is reachable")] * len(units))
        return await self.inner.score(units)


async def test_transient_engine_errors_retry_the_chunk_instead_of_storing_errors(
    tiny_engine: VllmEngine, redis_url: str
):
    flaky = FlakyEngine(tiny_engine, fail=1)
    settings = Settings(max_model_len=1024, redis_url=redis_url, jobs_chunk_pairs=4,
                        jobs_claim_idle_s=0.5, jobs_concurrency=1)  # fmt: skip
    app = create_app(settings, engine=flaky, registry=ConstitutionRegistry.with_builtins())  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            body = {"constitution": "harmless", "pairs": [pair(0), pair(1)], "principles": 1}
            job = (await http.post("/v1/jobs", json=body)).json()
            final = await wait_finished(http, job["id"], limit_s=60)
            assert flaky.fail == 0  # the failure happened
            assert (final["state"], final["done"], final["failed"]) == ("succeeded", 2, 0)
            results = await read_all(http, job["id"], limit=10)
            assert all("error" not in r for r in results)


async def test_limits_name_themselves(client: Client, redis_url: str):
    async with client(jobs_consumer=False, jobs_quota_active_jobs=1, jobs_quota_pairs=5,
                      jobs_max_upload_bytes=2048, rate_limit="5/minute") as http:  # fmt: skip
        too_many = {"constitution": "harmless", "pairs": [pair(i) for i in range(6)]}
        response = await http.post("/v1/jobs", json=too_many)
        assert response.status_code == 429, response.text
        error = response.json()["error"]
        assert (error["type"], error["param"]) == ("quota_exceeded", "pairs")
        assert "CAI_JUDGE_JOBS_QUOTA_PAIRS" in error["message"] and "5 pairs" in error["message"]
        assert response.headers["Retry-After"]

        body = "".join(json.dumps(pair(i)) + "\n" for i in range(30)).encode()
        upload = await http.post(
            "/v1/jobs?constitution=harmless", content=body, headers={"Content-Type": NDJSON}
        )
        assert upload.status_code == 413, upload.text
        assert upload.json()["error"]["param"] == "body"
        assert "2048 bytes" in upload.json()["error"]["message"]

        first = await http.post("/v1/jobs", json={"constitution": "harmless", "pairs": [pair(0)]})
        assert first.status_code == 202
        second = await http.post("/v1/jobs", json={"constitution": "harmless", "pairs": [pair(1)]})
        assert second.status_code == 429
        assert "CAI_JUDGE_JOBS_QUOTA_ACTIVE_JOBS" in second.json()["error"]["message"]
        # Ending a job gives its quota back.
        await http.delete(f"/v1/jobs/{first.json()['id']}")
        third = await http.post("/v1/jobs", json={"constitution": "harmless", "pairs": [pair(2)]})
        assert third.status_code == 202, third.text
        # Submitting counts against the caller's rate limit: 5 calls so far.
        limited = await http.post("/v1/jobs", json={"constitution": "harmless", "pairs": [pair(3)]})
        assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limited"
    redis = Redis.from_url(redis_url)
    # Only the two accepted jobs' hashes (one cancelled, one queued) remain; no stray input.
    assert len(await redis.keys("cai:v1:job:*:pairs")) == 1
    await redis.aclose()


async def test_jobs_belong_to_their_key(client: Client):
    keys_ = {"a": hash_api_key("key-a"), "b": hash_api_key("key-b"), "admin": hash_api_key("root")}
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    admin = {"Authorization": "Bearer root"}
    async with client(jobs_consumer=False, api_key_hashes=[keys_["a"], keys_["b"]],
                      admin_key_hashes=[keys_["admin"]]) as http:  # fmt: skip
        body = {"constitution": "harmless", "pairs": [pair(0)]}
        ids = [(await http.post("/v1/jobs", json=body, headers=a)).json()["id"] for _ in range(3)]
        job = ids[0]
        for method, path in (("GET", f"/v1/jobs/{job}"), ("GET", f"/v1/jobs/{job}/results"),
                             ("DELETE", f"/v1/jobs/{job}")):  # fmt: skip
            response = await http.request(method, path, headers=b)
            assert response.status_code == 404, (method, path)
            assert (await http.request(method, path, headers=admin)).status_code == 200
        assert (await http.get(f"/v1/jobs/{job}", headers=a)).json()["state"] == "cancelled"
        # Listing: the caller's own jobs, newest first, in pages.
        first = (await http.get("/v1/jobs?limit=2", headers=a)).json()
        assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
        rest = (await http.get(f"/v1/jobs?limit=2&cursor={first['next_cursor']}", headers=a)).json()
        assert [j["id"] for j in rest["jobs"]] == ids[:1] and rest["next_cursor"] is None
        assert (await http.get("/v1/jobs", headers=b)).json() == {"jobs": [], "next_cursor": None}


async def test_result_pages_are_bounded_by_bytes(client: Client, redis_url: str):
    async with client(jobs_consumer=False, jobs_max_page_bytes=1024) as http:
        body = {"constitution": "harmless", "pairs": [pair(i) for i in range(5)]}
        job = (await http.post("/v1/jobs", json=body)).json()
        store = RedisJobStore(Redis.from_url(redis_url), ttl_s=60)
        lines = [(0, True, b"a" * 400), (1, True, b"b" * 400), (2, True, b"c" * 400),
                 (3, True, b"d" * 3000), (4, True, b"e")]  # fmt: skip
        await store.write_results(job["id"], lines)
        pages = []
        cursor = 0
        while cursor < 5:
            response = await http.get(f"/v1/jobs/{job['id']}/results?cursor={cursor}&limit=100")
            pages.append([len(line) for line in response.content.splitlines()])
            cursor = int(response.headers["X-Next-Cursor"])
        # Two 400-byte lines fit 1 KiB, the third does not; a line over the bound comes
        # alone (a page always holds at least one line).
        assert pages == [[400, 400], [400], [3000], [1]]
        await store.redis.aclose()


async def test_a_consumer_loop_that_ends_is_restarted(client: Client, monkeypatch):
    """A loop that ends (here by a stray CancelledError, as a shared batch cancelled under
    it once raised) is started again, and the gauge shows the live loops."""
    step = JobConsumer.step
    ended: list[str] = []

    async def ends_once(self: JobConsumer, block_ms: int = 1000) -> int:
        if not ended:
            ended.append(self.name)
            raise asyncio.CancelledError
        return await step(self, block_ms)

    monkeypatch.setattr(JobConsumer, "step", ends_once)
    async with client(jobs_concurrency=2) as http:
        body = {"constitution": "harmless", "pairs": [pair(i) for i in range(6)], "principles": 1}
        job = (await http.post("/v1/jobs", json=body)).json()
        final = await wait_finished(http, job["id"], limit_s=60)
        assert final["state"] == "succeeded" and ended
        metrics = (await http.get("/metrics")).text
        assert "cai_judge_job_consumer_loops 2.0" in metrics
