"""The jobs store on a real redis-server (store/jobs.py, DESIGN.md §5): the at-least-once
rules a consumer relies on. A chunk delivered twice writes and counts nothing the second
time; a dead consumer's chunk is taken over once idle (XAUTOCLAIM, following its cursor);
a live consumer's renewed chunk is not; silent consumers are forgotten.

No engine: the records are written as a consumer would write them.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from cai_judge.store import keys
from cai_judge.store.jobs import JobRecord, RedisJobStore


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
    assert await store.write_results("j1", [(2, True, b"c")]) == (1, 0, "succeeded_with_errors")
    job = await store.get("j1")
    assert job is not None and (job.done, job.failed, job.state) == (2, 1, "succeeded_with_errors")
    assert not await store.redis.exists(keys.job_pairs("j1"))  # input dropped when done
    assert 0 < await store.redis.ttl(keys.job_results("j1")) <= 60
    assert (await store.state_counts())["succeeded_with_errors"] == 1
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
    assert [t.message_id for t in reclaimed] == [t.message_id for t in taken]
    assert [t.deliveries for t in reclaimed] == [2]  # counted for the dead letter
    # Renewing keeps a live consumer's chunk from being taken again.
    await store.renew("alive", taken[0].message_id)
    assert await store.reclaim("third", min_idle_ms=200, count=5) == []
    await store.ack(taken[0].message_id)
    assert await store.group_backlog() == (2, 0)  # two unread chunks left, none pending
    await store.redis.aclose()


async def test_reclaim_follows_the_cursor_and_dead_consumers_are_removed(redis_url: str):
    store = RedisJobStore(Redis.from_url(redis_url), ttl_s=60)
    await store.ensure_group()
    await store.append_lines("j3", [b"{}"] * 30)
    await store.create(record("j3", 30), 1, None, "digest")
    taken = await store.read_new("busy", count=30, block_ms=10)
    assert len(taken) == 30
    await asyncio.sleep(0.3)
    for task in taken[:25]:  # a live consumer renews these: only the last five are idle
        await store.renew("busy", task.message_id)
    # XAUTOCLAIM scans 10 entries per call with COUNT 1: without the cursor, none found.
    reclaimed = await store.reclaim("alive", min_idle_ms=200, count=1)
    assert [t.message_id for t in reclaimed] == [taken[25].message_id]
    assert reclaimed[0].deliveries == 2
    # A consumer that read nothing and is long silent is removed; one with work is kept.
    await store.redis.xgroup_createconsumer(keys.JOBS_STREAM, keys.JOBS_GROUP, "gone")
    await asyncio.sleep(0.2)
    assert await store.forget_idle_consumers(100, keep="alive") == 1
    names = {
        c["name"] for c in await store.redis.xinfo_consumers(keys.JOBS_STREAM, keys.JOBS_GROUP)
    }
    assert names == {b"busy", b"alive"}
    await store.redis.aclose()
