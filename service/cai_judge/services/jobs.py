"""Batch jobs as use cases: submit, status, results, cancel (the consumer that labels them
is services/job_consumer.py: enqueue and work apart, as arq keeps them).

DESIGN.md §5: jobs are durable and at least once, with idempotent writes. A submission
streams its pairs into Redis (never the whole job in memory), then creates the job and
queues its chunks in one transaction; a job that cannot be persisted gets 503. A result
line is what /v1/labels returns for that pair, in job order.

The reasoning at length: docs/internals.md, section "services/jobs.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from cai_judge.labeling.options import LabelOptions
from cai_judge.services.errors import (
    InvalidRequest,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    from_store,
)
from cai_judge.services.labels import LabelService
from cai_judge.services.security import Caller
from cai_judge.settings import Settings
from cai_judge.store.errors import StoreContended, StoreUnavailable
from cai_judge.store.jobs import (
    FINAL_STATES,
    IdempotencyKeyReused,
    JobRecord,
    Quota,
    QuotaExceeded,
    RedisJobStore,
)

logger = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_RESULTS_PER_READ = 10_000
MAX_JOBS_PER_LIST = 100
# Lines are appended to Redis in batches of this many: the upload's memory bound.
UPLOAD_BATCH_LINES = 1000
# A line longer than this cannot be a valid pair (three texts of MAX_TEXT_CHARS and JSON).
MAX_LINE_BYTES = 4 * 2**20


@dataclass(frozen=True, slots=True)
class JobStatus:
    id: str
    state: str
    total: int
    done: int
    failed: int
    pairs_per_s: float
    eta_s: float | None
    created_at: datetime
    updated_at: datetime
    constitution_id: str
    constitution_version: str

    @classmethod
    def of(cls, record: JobRecord) -> JobStatus:
        finished = record.done + record.failed
        rate = 0.0
        if record.started_at is not None and finished:
            elapsed = max(record.updated_at - record.started_at, 1e-3)
            rate = finished / elapsed
        eta: float | None = None
        if record.state in FINAL_STATES:
            eta = 0.0
        elif rate > 0:
            eta = (record.total - finished) / rate
        return cls(
            id=record.id,
            state=record.state,
            total=record.total,
            done=record.done,
            failed=record.failed,
            pairs_per_s=round(rate, 3),
            eta_s=None if eta is None else round(eta, 1),
            created_at=datetime.fromtimestamp(record.created_at, UTC),
            updated_at=datetime.fromtimestamp(record.updated_at, UTC),
            constitution_id=record.constitution_id,
            constitution_version=record.constitution_version,
        )


@dataclass(frozen=True, slots=True)
class ResultPage:
    lines: list[bytes]
    next_cursor: int
    state: str
    total: int


async def lines_of(
    chunks: AsyncIterable[bytes], max_line_bytes: int, max_bytes: int | None = None
) -> AsyncIterator[bytes]:
    """Non-blank lines of a streamed body, each at most `max_line_bytes`; a body over
    `max_bytes` in all (blank lines too) is refused with 413 as it passes the bound.

    Linear in the body: a line's parts are kept in a list and joined once, and only each
    new chunk is searched for newlines (never the line so far, which a long line would
    make quadratic in its chunks).
    """
    parts: list[bytes] = []
    pending = 0  # bytes in `parts`
    number = 0
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if max_bytes is not None and received > max_bytes:
            raise TooLarge(
                f"upload over the limit of {max_bytes} bytes per job "
                "(CAI_JUDGE_JOBS_MAX_UPLOAD_BYTES); split the file",
                param="body",
            )
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            parts.append(chunk[start:newline])
            line = b"".join(parts).strip()
            parts, pending = [], 0
            number += 1
            if line:
                yield line
            start = newline + 1
        if start < len(chunk):
            rest = chunk[start:]
            parts.append(rest)
            pending += len(rest)
        if pending > max_line_bytes:
            raise InvalidRequest(
                f"line {number + 1} is over {max_line_bytes} bytes; one pair per line",
                type="line_too_long",
                param="body",
            )
    last = b"".join(parts).strip()
    if last:
        yield last


def owner_of(caller: Caller) -> str:
    """The digest a job stores for its owner: never the key, nor a raw client address."""
    return hashlib.sha256(caller.identity.encode()).hexdigest()[:32]


class JobService:
    """Submit, inspect, read and cancel jobs; `store` None means no Redis configured."""

    def __init__(
        self,
        store: RedisJobStore | None,
        labels: LabelService,
        settings: Settings,
    ) -> None:
        self.store = store
        self.labels = labels
        self.registry = labels.registry
        self.settings = settings
        # Lines appended to Redis per round trip while an upload streams in.
        self.upload_batch_lines = UPLOAD_BATCH_LINES

    def _require_store(self) -> RedisJobStore:
        if self.store is None:
            raise Unavailable(
                "batch jobs need Redis: set CAI_JUDGE_REDIS_URL (the embedded default keeps "
                "no durable state); /v1/labels works without it",
                type="jobs_not_configured",
                retry_after_s=self.settings.retry_after_s,
            )
        return self.store

    def quota(self) -> Quota:
        s = self.settings
        return Quota(s.jobs_quota_active_jobs, s.jobs_quota_pairs, s.jobs_quota_bytes)

    def _over_quota(self, name: str, limit: int, used: int) -> RateLimited:
        what = {
            "active_jobs": ("active jobs", "jobs_quota_active_jobs", "pairs"),
            "pairs_queued": ("pairs queued", "jobs_quota_pairs", "pairs"),
            "bytes_stored": ("bytes of input stored", "jobs_quota_bytes", "body"),
        }[name]
        return RateLimited(
            f"over this key's quota of {limit} {what[0]} (CAI_JUDGE_{what[1].upper()}; "
            f"{used} in use by its active jobs): wait for them to finish, or cancel some",
            type="quota_exceeded",
            param=what[2],
            retry_after_s=max(self.settings.retry_after_s, 30),
        )

    async def submit(
        self,
        options: LabelOptions,
        lines: AsyncIterable[bytes],
        caller: Caller,
        idempotency_key: str | None = None,
    ) -> tuple[JobStatus, bool]:
        """Check the options as /v1/labels does, store the pairs as they stream in, then
        create the job. Returns (status, created)."""
        store = self._require_store()
        settings = self.settings
        if idempotency_key is not None and not (
            0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS
        ):
            raise InvalidRequest(
                f"Idempotency-Key must have 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
                param="idempotency-key",
            )
        self.labels.check_rate(caller)
        # The same checks as /v1/labels, before a line is read or stored (DESIGN.md §5):
        # a job whose every chunk the labeler would refuse is refused here with 422.
        constitution, _, _ = await asyncio.to_thread(self.labels.check_options, options)
        stored = options.to_dict()
        digest = hashlib.sha256(json.dumps(stored, sort_keys=True).encode())
        scope = None
        if idempotency_key is not None:
            scope = hashlib.sha256(f"{caller.identity}\0{idempotency_key}".encode()).hexdigest()
        owner = owner_of(caller)
        quota = self.quota()
        # A retry of a job this key already made (its answer was lost) gets that job back,
        # whatever the key's usage: its own job is in that usage, so checking the quota
        # first would refuse it with 429 and count its pairs twice. The body is still read,
        # hashed and stored (then discarded): `create` returns the job or refuses another
        # body under the key, and should the job vanish meanwhile, checks the quota itself.
        replay = await store.idempotent_job(scope) if scope is not None else None
        used = await store.usage(owner)  # StoreUnavailable: 503, nothing stored
        if replay is None and used["active_jobs"] + 1 > quota.active_jobs:
            raise self._over_quota("active_jobs", quota.active_jobs, used["active_jobs"])
        job_id = uuid.uuid4().hex
        total = 0
        size = 0
        try:
            batch: list[bytes] = []
            async for line in lines:
                total += 1
                size += len(line) + 1
                if total > settings.jobs_max_pairs:
                    raise InvalidRequest(
                        f"over the limit of {settings.jobs_max_pairs} pairs per job "
                        "(CAI_JUDGE_JOBS_MAX_PAIRS); split the file",
                        type="too_many_pairs",
                        param="pairs",
                    )
                if replay is None and used["pairs_queued"] + total > quota.pairs:
                    raise self._over_quota("pairs_queued", quota.pairs, used["pairs_queued"])
                if replay is None and used["bytes_stored"] + size > quota.bytes:
                    raise self._over_quota("bytes_stored", quota.bytes, used["bytes_stored"])
                digest.update(line)
                digest.update(b"\n")
                batch.append(line)
                if len(batch) >= self.upload_batch_lines:
                    await store.append_lines(job_id, batch)
                    batch = []
            if total == 0:
                raise InvalidRequest("a job needs at least one pair", param="pairs")
            await store.append_lines(job_id, batch)
            now = time.time()
            record = JobRecord(
                id=job_id,
                state="queued",
                total=total,
                done=0,
                failed=0,
                created_at=now,
                updated_at=now,
                started_at=None,
                constitution_id=constitution.id,
                constitution_version=constitution.version,
                options=stored,
                owner=owner,
                input_bytes=size,
            )
            actual_id, created = await store.create(
                record, settings.jobs_chunk_pairs, scope, digest.hexdigest(), quota
            )
        except IdempotencyKeyReused as reused:
            await self._discard_quietly(job_id)
            raise InvalidRequest(
                f"this Idempotency-Key made job {reused.job_id} from another body; use a new "
                "key for a new job",
                type="idempotency_key_reused",
                param="idempotency-key",
            ) from None
        except QuotaExceeded as over:  # other submissions of this key raced this one
            await self._discard_quietly(job_id)
            raise self._over_quota(over.field, over.limit, over.used) from None
        except StoreContended as contended:  # they kept racing it: come back, never 500
            await self._discard_quietly(job_id)
            raise from_store(contended, settings.retry_after_s) from None
        except BaseException:  # StoreUnavailable included: 503, and nothing is kept
            await self._discard_quietly(job_id)
            raise
        if not created:
            await self._discard_quietly(job_id)
        return await self.status(actual_id, caller), created

    async def _discard_quietly(self, job_id: str) -> None:
        if self.store is not None:
            with contextlib.suppress(StoreUnavailable):
                await self.store.discard(job_id)

    async def _record(self, job_id: str, caller: Caller) -> JobRecord:
        store = self._require_store()
        record = await store.get(job_id)
        # Another key's job is answered as a job that does not exist: its id says nothing.
        if record is None or not (caller.is_admin or record.owner == owner_of(caller)):
            raise NotFound(f"unknown job {job_id!r} (or its results expired)", param="job_id")
        return record

    async def status(self, job_id: str, caller: Caller) -> JobStatus:
        return JobStatus.of(await self._record(job_id, caller))

    async def list(self, caller: Caller, cursor: int, limit: int) -> tuple[list[JobStatus], int]:
        """The caller's own jobs, newest first; (statuses, next cursor)."""
        store = self._require_store()
        if not 1 <= limit <= MAX_JOBS_PER_LIST:
            raise InvalidRequest(
                f"limit must be 1 to {MAX_JOBS_PER_LIST}, got {limit}", param="limit"
            )
        records, next_cursor = await store.list_jobs(owner_of(caller), cursor, limit)
        return [JobStatus.of(r) for r in records], next_cursor

    async def results(self, job_id: str, cursor: int, limit: int, caller: Caller) -> ResultPage:
        record = await self._record(job_id, caller)
        if not 0 <= cursor <= record.total:
            raise InvalidRequest(
                f"cursor {cursor} is outside 0..{record.total} (the job's pair count)",
                param="cursor",
            )
        if not 1 <= limit <= MAX_RESULTS_PER_READ:
            raise InvalidRequest(
                f"limit must be 1 to {MAX_RESULTS_PER_READ}, got {limit}", param="limit"
            )
        assert self.store is not None
        lines = await self.store.results(
            job_id,
            cursor,
            min(limit, record.total - cursor),
            self.settings.jobs_max_page_bytes,
        )
        return ResultPage(lines, cursor + len(lines), record.state, record.total)

    async def cancel(self, job_id: str, caller: Caller) -> JobStatus:
        record = await self._record(job_id, caller)
        assert self.store is not None
        await self.store.cancel(job_id, record.owner)
        return await self.status(job_id, caller)
