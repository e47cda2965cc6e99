"""Job submission against a real redis-server on the fake engine (no consumer runs): the
store's per-key quota under concurrent submits, and an idempotent retry at the quota.

Submission is the store's logic, not the engine's, so these are fast tests; Redis is real
because WATCH/MULTI contention is what is under test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis
from redis.asyncio import Redis

from cai_judge.store import keys
from cai_judge.store.errors import StoreContended
from cai_judge.store.jobs import JobRecord, Quota, RedisJobStore
from tests.support.api import Client, pair


async def test_concurrent_submits_from_one_key_are_never_500_and_keep_the_quota(
    client: Client, redis_url: str
) -> None:
    # 16 one-pair jobs at once from one key, a quota of 64 jobs: every submit races the
    # others on the key's usage hash. Each must be created (202) or told to retry (503
    # with Retry-After), never 500, and the usage must count exactly the jobs created.
    async with client(redis_url=redis_url, jobs_consumer=False, jobs_quota_active_jobs=64,
                      rate_limit="1000/minute") as http:  # fmt: skip
        bodies = [{"constitution": "harmless", "pairs": [pair(i)]} for i in range(16)]
        responses = await asyncio.gather(*(http.post("/v1/jobs", json=b) for b in bodies))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {202, 503}, [(r.status_code, r.text) for r in responses]
        for response in responses:
            if response.status_code == 503:
                assert response.headers["Retry-After"]
        created = sum(r.status_code == 202 for r in responses)
        assert created >= 1
    assert await usage_of_the_one_key(redis_url) == (created, created)


async def usage_of_the_one_key(redis_url: str) -> tuple[int, int]:
    """(active jobs, pairs queued) of the only key that submitted, as Redis holds them."""
    redis = Redis.from_url(redis_url)
    try:
        (usage_key,) = await redis.keys(keys.owner_usage("*"))
        used = {k.decode(): int(v) for k, v in (await redis.hgetall(usage_key)).items()}
        jobs = sum(1 for k in await redis.keys(keys.job("*")) if k.count(b":") == 3)
    finally:
        await redis.aclose()
    assert jobs == used["active_jobs"]  # no job made past the usage it counts
    return used["active_jobs"], used["pairs_queued"]


@pytest.mark.parametrize(
    "quota", [{"jobs_quota_pairs": 6}, {"jobs_quota_active_jobs": 1}], ids=["pairs", "jobs"]
)
async def test_an_idempotent_retry_at_the_quota_gets_its_job(
    client: Client, redis_url: str, quota: dict[str, int]
):
    # A client at its quota whose answer was lost retries with the same Idempotency-Key:
    # it gets its job, and the job's own pairs are not counted against the retry (with a
    # quota of 6 pairs, a job of 4 was refused as 4 + 4).
    async with client(redis_url=redis_url, jobs_consumer=False, **quota) as http:
        body = {"constitution": "harmless", "pairs": [pair(i) for i in range(4)]}
        headers = {"Idempotency-Key": "lost-answer"}
        first = await http.post("/v1/jobs", json=body, headers=headers)
        assert first.status_code == 202, first.text
        again = await http.post("/v1/jobs", json=body, headers=headers)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == first.json()["id"]
        # Another body under the key is still refused for what it is, not for the quota.
        other = {"constitution": "harmless", "pairs": [pair(i) for i in range(10, 13)]}
        reused = await http.post("/v1/jobs", json=other, headers=headers)
        assert reused.status_code == 422 and reused.json()["error"]["type"] == (
            "idempotency_key_reused"
        )
        # A new job is still held to the quota.
        fresh = await http.post("/v1/jobs", json=other, headers={"Idempotency-Key": "new"})
        assert fresh.status_code == 429 and fresh.json()["error"]["type"] == "quota_exceeded"
    assert await usage_of_the_one_key(redis_url) == (1, 4)


def always_raced(redis_url: str) -> Callable[..., None]:
    """A `_check_quota` that lets another writer touch the usage it watches, every time:
    each of `create`'s attempts loses its WATCH."""
    sync = redis.Redis.from_url(redis_url)
    original = RedisJobStore._check_quota

    def check(raw: dict[bytes, bytes], record: JobRecord, quota: Quota) -> None:
        original(raw, record, quota)
        sync.hincrby(keys.owner_usage(record.owner), "raced", 1)

    return check


async def test_create_gives_up_on_contention_with_a_typed_error(redis_url: str, monkeypatch):
    monkeypatch.setattr(RedisJobStore, "_check_quota", staticmethod(always_raced(redis_url)))
    redis = Redis.from_url(redis_url)
    store = RedisJobStore(redis, ttl_s=60)
    record = JobRecord(
        id="j1", state="queued", total=1, done=0, failed=0, created_at=1.0, updated_at=1.0,
        started_at=None, constitution_id="harmless", constitution_version="1", owner="o",
    )  # fmt: skip
    quota = Quota(active_jobs=64, pairs=1000, bytes=2**20)
    try:
        store.create_max_attempts = 7
        with pytest.raises(StoreContended) as raised:
            await store.create(record, 4, None, "digest", quota)
        assert raised.value.attempts == 7 and "contended" in str(raised.value)
        # The time bound holds too, whatever the attempts left.
        store.create_max_attempts, store.create_budget_s = 10_000, 0.3
        started = time.monotonic()
        with pytest.raises(StoreContended) as raised:
            await store.create(record, 4, None, "digest", quota)
        assert 0.3 <= time.monotonic() - started < 1.0 and raised.value.attempts > 1
        assert not await redis.exists(keys.job("j1"))  # nothing was written
    finally:
        await redis.aclose()


async def test_a_submit_that_keeps_losing_the_race_is_503_with_retry_after(
    client: Client, redis_url: str, monkeypatch
):
    monkeypatch.setattr(RedisJobStore, "_check_quota", staticmethod(always_raced(redis_url)))
    async with client(redis_url=redis_url, jobs_consumer=False) as http:
        http.app.state.services.jobs.store.create_budget_s = 0.1  # type: ignore[attr-defined]
        response = await http.post("/v1/jobs", json={"constitution": "harmless",
                                                     "pairs": [pair(0)]})  # fmt: skip
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "store_contended"
        assert response.headers["Retry-After"]
    redis_ = Redis.from_url(redis_url)
    assert await redis_.keys(keys.job("*")) == []  # its input is discarded, no job made
    await redis_.aclose()
