"""JobService (services/jobs.py), the submit side, on its built object over a real
redis-server and the fake engine (no consumer runs): a job is refused at submit for what
/v1/labels would refuse, before a line is stored; idempotency keys give a retry its job
and refuse another body; per-job and per-key limits name their setting; jobs belong to
the key that made them. tests/services/test_job_submit.py has the quota under concurrent
submits; tests/e2e/test_jobs.py the whole wire on the real engine."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from cai_judge.services.errors import InvalidRequest, NotFound, RateLimited, Unavailable
from cai_judge.services.jobs import lines_of
from tests.support.api import pair
from tests.support.fake_engine import FakeEngine
from tests.support.services import ADMIN, OTHER, USER, built, lines, options


def rows(count: int) -> list[bytes]:
    return [json.dumps(pair(i)).encode() for i in range(count)]


async def stored_jobs(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    try:
        return len(await redis.keys("cai:v1:job:*"))
    finally:
        await redis.aclose()


async def test_without_redis_jobs_say_which_setting_enables_them(fake_engine: FakeEngine) -> None:
    async with built(fake_engine) as services:
        with pytest.raises(Unavailable) as refused:
            await services.jobs.submit(options(), lines(rows(1)), USER)
    assert refused.value.type == "jobs_not_configured"
    assert "CAI_JUDGE_REDIS_URL" in str(refused.value) and refused.value.retry_after_s


async def test_a_job_is_refused_at_submit_for_what_labels_would_refuse(
    fake_engine: FakeEngine, redis_url: str
) -> None:
    async with built(fake_engine, redis_url=redis_url, max_cot_tokens=8) as services:
        refusals = [
            (options(calibrated=True), "calibration_unavailable", "calibrated"),
            (options(mode="cot", cot_max_tokens=16), "cot_tokens_over_limit", "cot_max_tokens"),
        ]
        for refused_options, kind, param in refusals:
            with pytest.raises(InvalidRequest) as refused:
                await services.jobs.submit(refused_options, lines(rows(3)), USER)
            assert (refused.value.type, refused.value.param) == (kind, param)
        with pytest.raises(NotFound) as unknown:
            await services.jobs.submit(options(constitution="nope"), lines(rows(3)), USER)
        assert unknown.value.param == "constitution"
    assert await stored_jobs(redis_url) == 0  # nothing was stored for any of them


async def test_an_idempotency_key_gives_a_retry_its_job_and_refuses_another_body(
    fake_engine: FakeEngine, redis_url: str
) -> None:
    async with built(fake_engine, redis_url=redis_url) as services:
        first, created = await services.jobs.submit(options(), lines(rows(3)), USER, "k1")
        again, created_again = await services.jobs.submit(options(), lines(rows(3)), USER, "k1")
        assert created and not created_again and again.id == first.id and again.total == 3
        with pytest.raises(InvalidRequest) as reused:
            await services.jobs.submit(options(seed=1), lines(rows(3)), USER, "k1")
        assert (reused.value.type, reused.value.param) == (
            "idempotency_key_reused",
            "idempotency-key",
        )
        assert first.id in str(reused.value)
        # The key is the caller's: another key's same Idempotency-Key is another job.
        theirs, _ = await services.jobs.submit(options(), lines(rows(3)), OTHER, "k1")
        assert theirs.id != first.id
        with pytest.raises(InvalidRequest) as long_key:
            await services.jobs.submit(options(), lines(rows(1)), USER, "k" * 1000)
        assert long_key.value.param == "idempotency-key" and "characters" in str(long_key.value)


async def test_limits_name_their_setting_and_leave_nothing_stored(
    fake_engine: FakeEngine, redis_url: str
) -> None:
    async with built(
        fake_engine, redis_url=redis_url, jobs_max_pairs=4, jobs_quota_active_jobs=1
    ) as services:
        with pytest.raises(InvalidRequest) as too_many:
            await services.jobs.submit(options(), lines(rows(5)), USER)
        assert (too_many.value.type, too_many.value.param) == ("too_many_pairs", "pairs")
        assert "limit of 4 pairs per job (CAI_JUDGE_JOBS_MAX_PAIRS)" in str(too_many.value)
        with pytest.raises(InvalidRequest) as empty:
            await services.jobs.submit(options(), lines([]), USER)
        assert empty.value.param == "pairs" and "at least one pair" in str(empty.value)
        assert await stored_jobs(redis_url) == 0

        await services.jobs.submit(options(), lines(rows(2)), USER)
        with pytest.raises(RateLimited) as over:
            await services.jobs.submit(options(), lines(rows(2)), USER)
        assert over.value.type == "quota_exceeded"
        assert "quota of 1 active jobs (CAI_JUDGE_JOBS_QUOTA_ACTIVE_JOBS" in str(over.value)
        assert over.value.retry_after_s is not None and over.value.retry_after_s >= 30
        # Quotas are per key: another key still submits.
        await services.jobs.submit(options(), lines(rows(2)), OTHER)


async def test_jobs_belong_to_their_key_and_reads_name_their_bounds(
    fake_engine: FakeEngine, redis_url: str
) -> None:
    async with built(fake_engine, redis_url=redis_url) as services:
        job, _ = await services.jobs.submit(options(), lines(rows(3)), USER)
        assert (job.state, job.total, job.done) == ("queued", 3, 0)
        with pytest.raises(NotFound) as hidden:
            await services.jobs.status(job.id, OTHER)
        assert hidden.value.param == "job_id"
        assert (await services.jobs.status(job.id, ADMIN)).id == job.id
        listed, _ = await services.jobs.list(OTHER, 0, 10)
        assert listed == []
        with pytest.raises(InvalidRequest) as cursor:
            await services.jobs.results(job.id, 4, 10, USER)
        assert cursor.value.param == "cursor" and "outside 0..3" in str(cursor.value)
        with pytest.raises(InvalidRequest) as limit:
            await services.jobs.list(USER, 0, 0)
        assert limit.value.param == "limit"
        with pytest.raises(NotFound):
            await services.jobs.cancel(job.id, OTHER)
        cancelled = await services.jobs.cancel(job.id, USER)
        assert cancelled.state == "cancelled"
        page = await services.jobs.results(job.id, 0, 10, USER)
        assert (page.lines, page.next_cursor, page.state) == ([], 0, "cancelled")


async def test_lines_of_is_linear_in_the_chunks_of_a_long_line() -> None:
    line = b"x" * (2 * 2**20)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(line), 256):
            yield line[start : start + 256]
        yield b"\n{}\n"

    started = time.perf_counter()
    out = [item async for item in lines_of(chunks(), 4 * 2**20)]
    elapsed = time.perf_counter() - started
    assert out == [line, b"{}"]
    # 8,192 chunks: re-joining and re-splitting the line so far copies ~8 GB (seconds);
    # keeping the parts copies the line once.
    assert elapsed < 1.0, elapsed
