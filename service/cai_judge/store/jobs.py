"""Batch jobs in Redis: the input lines, the work stream, the results (DESIGN.md §5).

Input lines in a list, one `jobs:tasks` stream entry per chunk (XREADGROUP; XAUTOCLAIM takes
over a dead consumer's), results in a hash written with HSETNX by a script that also counts,
so a chunk delivered twice counts each index once. Chunks past `jobs_max_deliveries` go to
`jobs:dead`. A job is created in one MULTI with its per-key usage after all its input is
stored, and ends `succeeded`, `succeeded_with_errors`, `failed` or `cancelled`.

The key layout and the rules at length: docs/internals.md, section "store/jobs.py".
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError, WatchError

from cai_judge.store import keys
from cai_judge.store.errors import StoreContended, raises_store_unavailable

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "succeeded_with_errors", "failed", "cancelled")
STATES = ACTIVE_STATES + FINAL_STATES
# Result lines are read from Redis this many at a time, so a page stops near its byte
# bound without ever holding `limit` lines it will not send.
RESULT_READ_BATCH = 64
# Creating a job WATCHes its key's usage, so concurrent submits from one key make all but
# one retry. Contention is normal: each retry waits a random time up to a doubling bound
# (full jitter, so the losers spread out instead of colliding again), within a total time
# after which the submit is told to come back (503), never failed.
CREATE_MAX_ATTEMPTS = 64
CREATE_BUDGET_S = 5.0
CREATE_BACKOFF_FIRST_S = 0.002
CREATE_BACKOFF_CAP_S = 0.1


@dataclass(frozen=True, slots=True)
class Quota:
    """One key's bounds over its active jobs (settings `jobs_quota_*`)."""

    active_jobs: int
    pairs: int
    bytes: int


class QuotaExceeded(Exception):
    """Creating the job would take its key past `field`'s bound."""

    def __init__(self, field: str, limit: int, used: int, wanted: int) -> None:
        super().__init__(field)
        self.field, self.limit, self.used, self.wanted = field, limit, used, wanted


class IdempotencyKeyReused(Exception):
    """The same Idempotency-Key was used before with a different body."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass
class JobRecord:
    id: str
    state: str
    total: int
    done: int
    failed: int
    created_at: float
    updated_at: float
    started_at: float | None
    constitution_id: str
    constitution_version: str
    options: dict[str, Any] = field(default_factory=dict)
    owner: str = ""  # the submitting key's digest; "" for jobs made before owners existed
    input_bytes: int = 0
    reason: str | None = None

    @classmethod
    def from_hash(cls, job_id: str, raw: dict[bytes, bytes]) -> JobRecord:
        data = {k.decode(): v.decode() for k, v in raw.items()}
        started = data.get("started_at")
        return cls(
            id=job_id,
            state=data["state"],
            total=int(data["total"]),
            done=int(data.get("done", 0)),
            failed=int(data.get("failed", 0)),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            started_at=float(started) if started else None,
            constitution_id=data["constitution_id"],
            constitution_version=data["constitution_version"],
            options=json.loads(data["options"]),
            owner=data.get("owner", ""),
            input_bytes=int(data.get("input_bytes", 0)),
            reason=data.get("reason"),
        )


@dataclass(frozen=True)
class Task:
    message_id: bytes
    job_id: str
    start: int
    end: int
    deliveries: int = 1


# Ending a job releases its key's quota (KEYS[usage]): once, since only an active job ends.
_RELEASE = """
local function release(job, usage)
  -- `0 - n`, not `-n`: Lua writes -0 as "-0", which HINCRBY refuses.
  local total = tonumber(redis.call('HGET', job, 'total')) or 0
  local bytes = tonumber(redis.call('HGET', job, 'input_bytes')) or 0
  if redis.call('EXISTS', usage) == 1 then
    redis.call('HINCRBY', usage, 'active_jobs', -1)
    redis.call('HINCRBY', usage, 'pairs_queued', 0 - total)
    redis.call('HINCRBY', usage, 'bytes_stored', 0 - bytes)
  end
end
"""

# KEYS: job, results, pairs, zset queued, zset running, zset succeeded,
#       zset succeeded_with_errors, zset failed, owner usage
# ARGV: job id, now, ttl, then (index, ok, line) triples
_WRITE_RESULTS = (
    _RELEASE
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or (state ~= 'queued' and state ~= 'running') then
  return {0, 0, state or 'gone'}
end
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local done, failed = 0, 0
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    if ARGV[i + 1] == '1' then done = done + 1 else failed = failed + 1 end
  end
end
if done > 0 then redis.call('HINCRBY', KEYS[1], 'done', done) end
if failed > 0 then redis.call('HINCRBY', KEYS[1], 'failed', failed) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
if state == 'queued' then
  state = 'running'
  redis.call('HSET', KEYS[1], 'state', state)
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[5], '+inf', ARGV[1])
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
local finished = tonumber(redis.call('HGET', KEYS[1], 'done')) +
  tonumber(redis.call('HGET', KEYS[1], 'failed'))
if state == 'running' and finished >= total then
  local failed_total = tonumber(redis.call('HGET', KEYS[1], 'failed'))
  local final = KEYS[6]
  state = 'succeeded'
  if failed_total >= total then
    state, final = 'failed', KEYS[8]
  elseif failed_total > 0 then
    state, final = 'succeeded_with_errors', KEYS[7]
  end
  redis.call('HSET', KEYS[1], 'state', state)
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZADD', final, now + ttl, ARGV[1])
  release(KEYS[1], KEYS[9])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('DEL', KEYS[3])
end
return {done, failed, state}
"""
)

# KEYS: job, results, pairs, zset queued, zset running, zset of the final state, usage
# ARGV: job id, now, ttl, final state (cancelled or failed), reason
_FINISH = (
    _RELEASE
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
if state == 'queued' or state == 'running' then
  release(KEYS[1], KEYS[7])
  redis.call('HSET', KEYS[1], 'state', ARGV[4], 'updated_at', ARGV[2], 'reason', ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZADD', KEYS[6], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[3])
  return ARGV[4]
end
return state
"""
)


# KEYS: job, zset queued, zset running ; ARGV: job id, now.
# The first chunk a consumer takes starts the clock for the rate and turns the job running.
_MARK_STARTED = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if not redis.call('HGET', KEYS[1], 'started_at') then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[2])
end
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'updated_at', ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], '+inf', ARGV[1])
end
return 1
"""


# KEYS: stream ; ARGV: group, idle ms, the caller's own name.
# Consumers with nothing pending and silent for longer than the idle bound are dead (their
# chunks were reclaimed); the check and the delete are one script, so a consumer that was
# just handed a chunk is never deleted with it (DELCONSUMER drops its pending entries).
_FORGET_CONSUMERS = """
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) > tonumber(ARGV[2])
      and info['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
"""


@raises_store_unavailable
class RedisJobStore:
    """Every public call raises StoreUnavailable, and only that, when Redis fails."""

    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        # redis-py's stubs type replies as `bytes | str` whatever the client's decoding;
        # this client never decodes, so replies are handled as bytes.
        self.redis: Any = redis
        self.ttl_s = ttl_s
        # The bounds on create's retries under contention (tests lower them).
        self.create_max_attempts = CREATE_MAX_ATTEMPTS
        self.create_budget_s = CREATE_BUDGET_S
        self._write_results = redis.register_script(_WRITE_RESULTS)
        self._finish = redis.register_script(_FINISH)
        self._mark_started = redis.register_script(_MARK_STARTED)
        self._forget_consumers = redis.register_script(_FORGET_CONSUMERS)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(keys.JOBS_STREAM, keys.JOBS_GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    # -- submission --------------------------------------------------------------------

    async def append_lines(self, job_id: str, lines: Sequence[bytes]) -> None:
        """Store more input; the list expires unless a job is created over it."""
        if not lines:
            return
        key = keys.job_pairs(job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, *lines)
            pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def discard(self, job_id: str) -> None:
        await self.redis.delete(keys.job_pairs(job_id))

    async def create(
        self,
        record: JobRecord,
        chunk_pairs: int,
        idempotency_scope: str | None,
        body_digest: str,
        quota: Quota | None = None,
    ) -> tuple[str, bool]:
        """Make the job and queue its chunks; or return the job this key already made.

        Returns (job id, created). Raises IdempotencyKeyReused for the same key with
        another body, QuotaExceeded when the owner's active jobs would pass `quota`, and
        StoreContended when concurrent submits of the owner kept winning the race for
        `create_max_attempts` tries or `create_budget_s` seconds (nothing is written).
        The idempotency key is looked up before the quota: a retry gets its job back
        whatever the owner's usage.
        """
        job_key = keys.job(record.id)
        idem_key = keys.idempotency(idempotency_scope) if idempotency_scope else None
        usage_key = keys.owner_usage(record.owner)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(usage_key, *([idem_key] if idem_key else []))
                    if idem_key is not None:
                        existing = await pipe.get(idem_key)
                        if existing is not None:
                            job_id, _, digest = existing.decode().partition(" ")
                            if await pipe.exists(keys.job(job_id)):
                                if digest != body_digest:
                                    raise IdempotencyKeyReused(job_id)
                                return job_id, False
                    if quota is not None:
                        self._check_quota(await pipe.hgetall(usage_key), record, quota)
                    pipe.multi()
                    pipe.hset(
                        job_key,
                        mapping={
                            "state": record.state,
                            "total": record.total,
                            "done": 0,
                            "failed": 0,
                            "created_at": repr(record.created_at),
                            "updated_at": repr(record.updated_at),
                            "constitution_id": record.constitution_id,
                            "constitution_version": record.constitution_version,
                            "options": json.dumps(record.options, sort_keys=True),
                            "body_digest": body_digest,
                            "owner": record.owner,
                            "input_bytes": record.input_bytes,
                        },
                    )
                    pipe.persist(keys.job_pairs(record.id))
                    pipe.zadd(keys.jobs_by_state("queued"), {record.id: math.inf})
                    pipe.hincrby(usage_key, "active_jobs", 1)
                    pipe.hincrby(usage_key, "pairs_queued", record.total)
                    pipe.hincrby(usage_key, "bytes_stored", record.input_bytes)
                    owner_jobs = keys.owner_jobs(record.owner)
                    pipe.zadd(owner_jobs, {record.id: record.created_at})
                    # The list outlives its oldest finished job by the TTL; GET /v1/jobs
                    # drops entries whose job expired.
                    pipe.expire(owner_jobs, self.ttl_s * 2)
                    if idem_key is not None:
                        pipe.set(idem_key, f"{record.id} {body_digest}", ex=self.ttl_s)
                    for start in range(0, record.total, chunk_pairs):
                        end = min(start + chunk_pairs, record.total)
                        pipe.xadd(keys.JOBS_STREAM, {"job": record.id, "start": start, "end": end})
                    await pipe.execute()
                    return record.id, True
                except WatchError:
                    pass  # another submission with this key raced us: look again
            waited = time.monotonic() - started
            if attempt >= self.create_max_attempts or waited >= self.create_budget_s:
                raise StoreContended("RedisJobStore.create", attempt, waited)
            bound = min(CREATE_BACKOFF_CAP_S, CREATE_BACKOFF_FIRST_S * 2**attempt)
            await asyncio.sleep(min(random.uniform(0, bound), self.create_budget_s - waited))

    async def idempotent_job(self, idempotency_scope: str) -> tuple[str, str] | None:
        """(job id, body digest) of the job this scope made, while that job exists.

        A submit looks here before its quota: a retry of a job already made is answered
        with that job, and the job's own usage is not counted against its retry.
        """
        existing = await self.redis.get(keys.idempotency(idempotency_scope))
        if existing is None:
            return None
        job_id, _, digest = existing.decode().partition(" ")
        if not await self.redis.exists(keys.job(job_id)):
            return None
        return job_id, digest

    @staticmethod
    def _check_quota(raw: dict[bytes, bytes], record: JobRecord, quota: Quota) -> None:
        used = {k.decode(): int(v) for k, v in raw.items()}
        for name, limit, wanted in (
            ("active_jobs", quota.active_jobs, 1),
            ("pairs_queued", quota.pairs, record.total),
            ("bytes_stored", quota.bytes, record.input_bytes),
        ):
            if used.get(name, 0) + wanted > limit:
                raise QuotaExceeded(name, limit, used.get(name, 0), wanted)

    async def usage(self, owner: str) -> dict[str, int]:
        """The owner's active jobs, queued pairs and stored input bytes."""
        raw = await self.redis.hgetall(keys.owner_usage(owner))
        used = {k.decode(): int(v) for k, v in raw.items()}
        return {n: used.get(n, 0) for n in ("active_jobs", "pairs_queued", "bytes_stored")}

    # -- reading -----------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.hgetall(keys.job(job_id))
        if not raw:
            return None
        return JobRecord.from_hash(job_id, raw)

    async def cancel(self, job_id: str, owner: str = "") -> str | None:
        return await self.finish(job_id, "cancelled", "cancelled by the client", owner)

    async def finish(self, job_id: str, state: str, reason: str, owner: str = "") -> str | None:
        """End an active job as `cancelled` or `failed`; a finished one keeps its state."""
        result = await self._finish(
            keys=self._state_keys(job_id, state, owner),
            args=[job_id, time.time(), self.ttl_s, state, reason],
        )
        return result.decode() if isinstance(result, bytes) else result

    async def results(
        self, job_id: str, cursor: int, limit: int, max_bytes: int | None = None
    ) -> list[bytes]:
        """Results from `cursor` on, stopping at the first index not yet finished, after
        `limit` lines, or once the lines reach `max_bytes` (always at least one line)."""
        prefix: list[bytes] = []
        size = 0
        index, end = cursor, cursor + max(limit, 0)
        while index < end:
            batch = min(RESULT_READ_BATCH, end - index)
            values = await self.redis.hmget(
                keys.job_results(job_id), [str(i) for i in range(index, index + batch)]
            )
            for value in values:
                if value is None:
                    return prefix
                if prefix and max_bytes is not None and size + len(value) + 1 > max_bytes:
                    return prefix
                prefix.append(value)
                size += len(value) + 1  # and its newline
            index += batch
        return prefix

    async def list_jobs(self, owner: str, cursor: int, limit: int) -> tuple[list[JobRecord], int]:
        """The owner's jobs, newest first, from position `cursor`; (records, next cursor).

        Entries whose job expired are dropped from the list as they are met.
        """
        owner_jobs = keys.owner_jobs(owner)
        records: list[JobRecord] = []
        position = cursor
        while len(records) < limit:
            ids = await self.redis.zrevrange(owner_jobs, position, position + limit - 1)
            if not ids:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(keys.job(job_id.decode()))
                raws = await pipe.execute()
            gone = []
            for job_id, raw in zip(ids, raws, strict=True):
                if not raw:
                    gone.append(job_id)
                elif len(records) < limit:
                    records.append(JobRecord.from_hash(job_id.decode(), raw))
                    position += 1
            if gone:
                # Removing shifts later entries down: `position` already skips only kept ones.
                await self.redis.zrem(owner_jobs, *gone)
            if len(ids) < limit and not gone:
                break
        return records, position

    async def state_counts(self) -> dict[str, int]:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in STATES:
                pipe.zremrangebyscore(keys.jobs_by_state(state), "-inf", now)
                pipe.zcard(keys.jobs_by_state(state))
            replies = await pipe.execute()
        return {state: int(replies[2 * i + 1]) for i, state in enumerate(STATES)}

    async def group_backlog(self) -> tuple[int, int]:
        """(entries no consumer has read yet, entries read and not acknowledged).

        Acknowledged entries are deleted (XDEL), so the stream holds exactly the unread
        and the pending ones; XINFO's own `lag` is unknown after deletions.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.JOBS_STREAM)
            pipe.xpending(keys.JOBS_STREAM, keys.JOBS_GROUP)
            length, pending = await pipe.execute()
        pending_count = int(pending["pending"])
        return max(int(length) - pending_count, 0), pending_count

    # -- consuming ---------------------------------------------------------------------

    @staticmethod
    def _tasks(entries: Sequence[Any]) -> list[Task]:
        tasks = []
        for message_id, fields in entries:
            if not fields:  # deleted from the stream meanwhile
                continue
            tasks.append(
                Task(
                    message_id,
                    fields[b"job"].decode(),
                    int(fields[b"start"]),
                    int(fields[b"end"]),
                )
            )
        return tasks

    async def read_new(self, consumer: str, count: int, block_ms: int) -> list[Task]:
        reply = await self.redis.xreadgroup(
            keys.JOBS_GROUP, consumer, {keys.JOBS_STREAM: ">"}, count=count, block=block_ms
        )
        tasks: list[Task] = []
        for _stream, entries in reply or []:
            tasks.extend(self._tasks(entries))
        return tasks

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Task]:
        """Entries another (dead or silent) consumer read and left idle too long, each with
        how many times it has now been delivered (XAUTOCLAIM counts each claim).

        XAUTOCLAIM scans at most COUNT×10 pending entries per call and returns where to go
        on: follow the cursor until it comes back to 0-0 or `count` entries are claimed, so
        an idle entry behind many busy ones is still found.
        """
        tasks: list[Task] = []
        start = "0-0"
        for _ in range(1000):  # a bound, never reached: each call moves the cursor on
            reply = await self.redis.xautoclaim(
                keys.JOBS_STREAM, keys.JOBS_GROUP, consumer, min_idle_ms, start,
                count=count - len(tasks),
            )  # fmt: skip
            tasks.extend(self._tasks(reply[1]))
            start = reply[0]
            if start in (b"0-0", "0-0") or len(tasks) >= count:
                break
        if not tasks:
            return tasks
        async with self.redis.pipeline(transaction=False) as pipe:
            for task in tasks:
                pipe.xpending_range(
                    keys.JOBS_STREAM, keys.JOBS_GROUP, task.message_id, task.message_id, 1
                )
            replies = await pipe.execute()
        counted = []
        for task, pending in zip(tasks, replies, strict=True):
            deliveries = int(pending[0]["times_delivered"]) if pending else task.deliveries
            counted.append(replace(task, deliveries=deliveries))
        return counted

    async def forget_idle_consumers(self, idle_ms: int, keep: str) -> int:
        """Remove consumers with nothing pending, silent for `idle_ms`; returns how many."""
        removed = await self._forget_consumers(
            keys=[keys.JOBS_STREAM], args=[keys.JOBS_GROUP, idle_ms, keep]
        )
        return int(removed)

    async def dead_letter(self, task: Task, reason: str, max_entries: int = 10_000) -> None:
        """Keep a given-up chunk and why (XRANGE cai:v1:jobs:dead - + to read them)."""
        await self.redis.xadd(
            keys.JOBS_DEAD_LETTER,
            {"job": task.job_id, "start": task.start, "end": task.end,
             "deliveries": task.deliveries, "reason": reason, "at": repr(time.time())},
            maxlen=max_entries, approximate=True,
        )  # fmt: skip

    async def note_chunk_failure(self, task: Task, reason: str) -> None:
        key = keys.job_chunk_failures(task.job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, str(task.start), reason[:2000])
            pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def chunk_failure(self, task: Task) -> str | None:
        value = await self.redis.hget(keys.job_chunk_failures(task.job_id), str(task.start))
        return value.decode() if value is not None else None

    async def renew(self, consumer: str, message_id: bytes) -> None:
        await self.redis.xclaim(
            keys.JOBS_STREAM, keys.JOBS_GROUP, consumer, 0, [message_id], justid=True
        )

    async def ack(self, message_id: bytes) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(keys.JOBS_STREAM, keys.JOBS_GROUP, message_id)
            pipe.xdel(keys.JOBS_STREAM, message_id)
            await pipe.execute()

    async def mark_started(self, job_id: str) -> None:
        await self._mark_started(
            keys=[keys.job(job_id), keys.jobs_by_state("queued"), keys.jobs_by_state("running")],
            args=[job_id, time.time()],
        )

    async def chunk_input(self, job_id: str, start: int, end: int) -> list[bytes]:
        lines: list[bytes] = await self.redis.lrange(keys.job_pairs(job_id), start, end - 1)
        return lines

    async def finished_indices(self, job_id: str, start: int, end: int) -> set[int]:
        values = await self.redis.hmget(
            keys.job_results(job_id), [str(i) for i in range(start, end)]
        )
        return {start + i for i, v in enumerate(values) if v is not None}

    async def write_results(
        self, job_id: str, results: Sequence[tuple[int, bool, bytes]], owner: str = ""
    ) -> tuple[int, int, str]:
        """Store each index's result once; returns (newly done, newly failed, state)."""
        args: list[Any] = [job_id, time.time(), self.ttl_s]
        for index, ok, line in results:
            args.extend([index, "1" if ok else "0", line])
        done, failed, state = await self._write_results(
            keys=[
                *self._state_keys(job_id, "succeeded", owner)[:6],
                keys.jobs_by_state("succeeded_with_errors"),
                keys.jobs_by_state("failed"),
                keys.owner_usage(owner),
            ],
            args=args,
        )
        return int(done), int(failed), state.decode() if isinstance(state, bytes) else state

    def _state_keys(self, job_id: str, final_state: str, owner: str) -> list[str]:
        return [
            keys.job(job_id),
            keys.job_results(job_id),
            keys.job_pairs(job_id),
            keys.jobs_by_state("queued"),
            keys.jobs_by_state("running"),
            keys.jobs_by_state(final_state),
            keys.owner_usage(owner),
        ]
