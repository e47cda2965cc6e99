"""Two Redis roles (issue 29): the label cache may be evicted, a job's data may not. With
CAI_JUDGE_CACHE_REDIS_URL on a cache Redis (`allkeys-lru`) beside a jobs Redis
(`noeviction`), as k8s/components/redis runs them, filling the cache far past its memory
evicts cache entries only: the job, its results and its idempotency key stay, and no
cache write fails. Real redis-servers with small `maxmemory`; the fake engine (the engine
is not what is under test)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cai_judge.store.redis import RedisUnitCache
from cai_judge.testing.redis_server import REDIS_SERVER, RedisServer
from tests.support.api import Client, pair

MIB = 2**20


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is missing: run scripts/setup.sh (Debian's redis-server)")
    servers = []
    for name, maxmemory, policy in (("jobs", 16 * MIB, "noeviction"),
                                    ("cache", 4 * MIB, "allkeys-lru")):  # fmt: skip
        directory = tmp_path / name
        directory.mkdir()
        server = RedisServer(directory).start()
        server.client().config_set("maxmemory", maxmemory)
        server.client().config_set("maxmemory-policy", policy)
        servers.append(server)
    try:
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


async def test_filling_the_cache_never_evicts_a_jobs_data(
    client: Client, roles: tuple[RedisServer, RedisServer]
):
    jobs, cache = roles
    settings = {"redis_url": jobs.url, "cache_redis_url": cache.url, "jobs_consumer": False}
    async with client(**settings) as http:
        body = {"constitution": "harmless", "pairs": [pair(i) for i in range(20)], "principles": 1}
        made = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert made.status_code == 202, made.text
        job_id = made.json()["id"]
        jobs_keys = {key: jobs.client().type(key) for key in jobs.client().scan_iter()}
        assert jobs_keys

        # The cache the service writes labels through, filled to 6x the cache Redis's memory
        # and 1.5x the jobs Redis's: on one Redis this is an OOM error or evicted job keys.
        store = http.app.state.services.cache.store  # type: ignore[attr-defined]
        assert isinstance(store, RedisUnitCache)
        value = os.urandom(4096)
        for batch in range(24):
            await store.set_many({f"unit:{batch}:{i}": value for i in range(256)}, ttl_s=3600)

        stats = cache.client().info("stats")
        assert stats["evicted_keys"] > 0  # the cache did evict, as it may
        assert jobs.client().info("stats")["evicted_keys"] == 0
        assert {key: jobs.client().type(key) for key in jobs.client().scan_iter()} == jobs_keys

        status = await http.get(f"/v1/jobs/{job_id}")
        assert status.status_code == 200 and status.json()["total"] == 20
        again = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert again.json()["id"] == job_id  # the idempotency key survived


async def test_the_cache_uses_the_main_redis_when_no_cache_url_is_set(
    client: Client, roles: tuple[RedisServer, RedisServer]
):
    jobs, _ = roles
    async with client(redis_url=jobs.url, jobs_consumer=False) as http:
        services = http.app.state.services  # type: ignore[attr-defined]
        assert services.cache_redis is None
        await services.cache.store.set_many({"unit:x": b"v"}, ttl_s=60)
        assert jobs.client().get("unit:x") == b"v"
