"""The label cache (engine/caching.py) on a real redis-server: hits, misses, failing open
on errors and timeouts, single flight, and usage over HTTP. Caching is not the engine's
logic, so it runs on the fake engine (tests/support/fake_engine.py); who-waits-for-what
races on a fake that blocks until released, over the embedded store and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from cai_judge.api.app import create_app
from cai_judge.engine.base import ScoreUnit, UnitScore
from cai_judge.engine.caching import CachingEngine, unit_digest
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from cai_judge.store import keys
from cai_judge.store.base import UnitCacheStore
from cai_judge.store.memory import MemoryUnitCache
from cai_judge.store.redis import RedisUnitCache
from cai_judge.testing.ports import free_port
from cai_judge.testing.redis_server import RedisServer
from tests.support.fake_engine import (
    FakeEngine,
    blocking_engine,
    everyone_leaves,
    rejoin_after_zero,
)


class Spy:
    """An engine, recording which units reach it."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.model_name = engine.model_name
        self.max_model_len = engine.max_model_len
        self.tokenizer = engine.tokenizer
        self.calls: list[list[ScoreUnit]] = []

    async def score(self, units: Sequence[ScoreUnit]) -> list[UnitScore]:
        self.calls.append(list(units))
        return await self.engine.score(units)

    @property
    def units_sent(self) -> int:
        return sum(len(c) for c in self.calls)


class Counts(dict[str, int]):
    def __call__(self, result: str, units: int) -> None:
        self[result] = self.get(result, 0) + units


def unit(engine: FakeEngine, text: str) -> ScoreUnit:
    ids = tuple(engine.tokenizer.encode(f"{text} The answer is: ("))
    return ScoreUnit(ids, (5, 7), prefix_length=0)


def caching(spy: Spy, redis: Redis, counts: Counts, timeout_s: float = 0.05) -> CachingEngine:
    return CachingEngine(
        spy, RedisUnitCache(redis), "tiny\0\0auto", ttl_s=60, timeout_s=timeout_s,
        on_lookup=counts,
    )  # fmt: skip


async def test_miss_then_hit_costs_no_engine_work(fake_engine: FakeEngine, redis_url: str):
    redis = Redis.from_url(redis_url)
    spy, counts = Spy(fake_engine), Counts()
    cache = caching(spy, redis, counts)
    units = [unit(fake_engine, f"cache test {i}") for i in range(3)]

    first = await cache.score(units)
    await cache.flush()
    assert counts == {"miss": 3}
    assert spy.units_sent == 3
    assert not any(s.from_cache for s in first)
    stored = await redis.exists(*[keys.cache_unit(unit_digest("tiny\0\0auto", u)) for u in units])
    assert stored == 3
    assert all(k.startswith(b"cai:v1:cache:unit:") for k in await redis.keys("*"))

    second = await cache.score(units)
    assert counts == {"miss": 3, "hit": 3}
    assert spy.units_sent == 3  # nothing new reached the engine
    assert all(s.from_cache and s.prompt_tokens == 0 for s in second)
    assert [(s.logprob_a, s.logprob_b) for s in second] == [
        (s.logprob_a, s.logprob_b) for s in first
    ]
    # Another model identity (another revision) never reads these entries.
    other = CachingEngine(spy, RedisUnitCache(redis), "tiny\0v2\0auto", ttl_s=60)
    await other.score(units[:1])
    assert spy.units_sent == 4
    await redis.aclose()


async def test_redis_down_falls_through_to_the_engine(fake_engine: FakeEngine):
    redis = Redis(port=free_port(), socket_connect_timeout=0.2)  # nothing listens there
    spy, counts = Spy(fake_engine), Counts()
    cache = caching(spy, redis, counts)
    units = [unit(fake_engine, "redis is down"), unit(fake_engine, "still labeled")]
    scores = await cache.score(units)
    await cache.flush()
    assert len(scores) == 2 and spy.units_sent == 2
    assert counts["error"] >= 2  # the lookup, and the write after it
    assert "hit" not in counts and "miss" not in counts
    await redis.aclose()


async def test_slow_redis_times_out_within_the_budget(fake_engine: FakeEngine, tmp_path: Path):
    server = RedisServer(tmp_path).start()
    redis = Redis(port=server.port)
    spy, counts = Spy(fake_engine), Counts()
    cache = caching(spy, redis, counts, timeout_s=0.05)
    await redis.ping()  # a pooled connection, so the stall hits the command, not the connect
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)  # Redis alive but answering nothing
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        lookup = await cache._lookup([unit_digest("x", unit(fake_engine, "slow"))])
        assert loop.time() - started < 0.5
        assert lookup == {} and counts == {"error": 1}
        scores = await cache.score([unit(fake_engine, "slow redis")])
        assert len(scores) == 1 and spy.units_sent == 1
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        await cache.flush()
        await redis.aclose()
        server.stop()


async def test_concurrent_identical_units_are_computed_once(
    fake_engine: FakeEngine, redis_url: str
):
    redis = Redis.from_url(redis_url)
    spy, counts = Spy(fake_engine), Counts()
    cache = caching(spy, redis, counts)
    shared = unit(fake_engine, "wanted by three requests at once")
    own = [unit(fake_engine, f"only request {i}") for i in range(3)]
    results = await asyncio.gather(*(cache.score([shared, own[i]]) for i in range(3)))
    sent = [u for call in spy.calls for u in call]
    assert sent.count(shared) == 1
    assert len(sent) == 4
    assert results[0][0] is results[1][0] is results[2][0]
    await cache.flush()
    await redis.aclose()


async def test_a_cancelled_caller_does_not_cancel_the_others(
    fake_engine: FakeEngine, redis_url: str
):
    redis = Redis.from_url(redis_url)
    spy, counts = Spy(fake_engine), Counts()
    cache = caching(spy, redis, counts)
    shared = unit(fake_engine, "one caller leaves, one stays " * 20)
    leaver = asyncio.create_task(cache.score([shared]))
    stayer = asyncio.create_task(cache.score([shared]))
    await asyncio.sleep(0)
    leaver.cancel()
    scores = await stayer
    assert len(scores) == 1 and not scores[0].from_cache
    await cache.flush()
    await redis.aclose()


PAIR = {
    "id": "p1",
    "prompt": "How do I boil an egg?",
    "response_a": "Simmer it for nine minutes.",
    "response_b": "I won't help with cooking.",
}


async def test_usage_reports_cached_units_and_metrics_count_them(
    fake_engine: FakeEngine, redis_url: str
):
    app = create_app(
        Settings(max_model_len=1024, redis_url=redis_url, jobs_consumer=False),
        engine=fake_engine,
        registry=ConstitutionRegistry.with_builtins(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            body = {"constitution": "harmless", "pairs": [PAIR], "principles": 2}
            first = (await http.post("/v1/labels", json=body)).json()
            await app.state.services.cache.flush()
            second = (await http.post("/v1/labels", json=body)).json()
            assert first["usage"]["cached_score_units"] == 0
            assert second["usage"]["cached_score_units"] == second["usage"]["score_units"] == 4
            assert second["usage"]["prompt_tokens"] == 0
            assert second["labels"][0]["margin"] == first["labels"][0]["margin"]
            metrics = (await http.get("/metrics")).text
            assert 'cai_judge_cache_requests_total{result="hit"} 4.0' in metrics
            assert 'cai_judge_cache_requests_total{result="miss"} 4.0' in metrics


@pytest_asyncio.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[UnitCacheStore]:
    if request.param == "memory":
        yield MemoryUnitCache(100)
        return
    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisUnitCache(redis)
    await redis.aclose()


async def test_a_caller_joining_a_unit_nobody_waited_for_keeps_the_fill(store: UnitCacheStore):
    """A race once: C joined u2 after its waiters had dropped to zero and was not counted,
    so X leaving cancelled the fill under C (CancelledError, HTTP 500)."""
    fake = blocking_engine()
    cache = CachingEngine(fake, store, "fake\0\0float32", ttl_s=60, timeout_s=1.0)
    [score] = await rejoin_after_zero(cache, fake)
    assert score == UnitScore(-12.0, -1.0, 3, 0)  # u2's own score, computed
    assert len(fake.calls) == 1 and fake.cancelled == []
    assert len(cache._flights) == 0
    await cache.flush()


async def test_when_every_caller_leaves_the_fill_and_engine_call_are_cancelled(
    store: UnitCacheStore,
):
    fake = blocking_engine()
    cache = CachingEngine(fake, store, "fake\0\0float32", ttl_s=60, timeout_s=1.0)
    await everyone_leaves(cache, fake)
    assert len(cache._flights) == 0
    assert not cache._writes  # nothing computed, nothing written
