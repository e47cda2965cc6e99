"""Batch jobs as use cases: submit, status, results, cancel, and the consumer that labels.

DESIGN.md §5: jobs are durable and at least once, with idempotent writes. A submission
streams its pairs into Redis (never the whole job in memory), then creates the job and
queues its chunks in one transaction; a job that cannot be persisted gets 503. Every replica
and `cai-judge worker` runs a `JobConsumer`; a dead one's chunks are reclaimed by the
others. A result line is what /v1/labels returns for that pair, in job order.

The reasoning at length: docs/internals.md, section "services/jobs.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cai_judge.labeling.constitution import ConstitutionNotFound
from cai_judge.labeling.options import LabelOptions
from cai_judge.labeling.schema import Label, PairError
from cai_judge.services.errors import (
    InvalidRequest,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    from_store,
)
from cai_judge.services.labels import LabelCommand, LabelService
from cai_judge.services.metrics import ServiceMetrics
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
    Task,
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


def result_line(result: Label | PairError) -> bytes:
    """What /v1/labels returns for one pair (it drops null fields too)."""
    return result.model_dump_json(exclude_none=True).encode()


class ChunkLabeler:
    """Labels one chunk's lines exactly as /v1/labels would, with the job's index per pair.

    It calls the label service itself (past its per-caller rate limit: the job was admitted
    when it was submitted), so a job gets every option, limit and error of /v1/labels.
    """

    def __init__(self, labels: LabelService) -> None:
        self.labels = labels
        self.admission = labels.admission
        self.registry = labels.registry

    async def label(
        self, record: JobRecord, indexed_lines: list[tuple[int, bytes]]
    ) -> list[tuple[int, Label | PairError]]:
        out: dict[int, Label | PairError] = {}
        raw_pairs: list[Mapping[str, Any]] = []
        positions: list[int] = []
        for index, line in indexed_lines:
            try:
                value = json.loads(line)
            except ValueError as error:
                out[index] = PairError.of(
                    None, index, f"not valid JSON: {error}", param=f"pairs.{index}"
                )
                continue
            if not isinstance(value, dict):
                out[index] = PairError.of(
                    None, index, "expected a JSON object (a pair)", param=f"pairs.{index}"
                )
                continue
            raw_pairs.append(value)
            positions.append(index)
        if raw_pairs:
            # The version the job was submitted against, whatever the latest is now; an
            # old record's missing options take from_dict's defaults.
            ref = f"{record.constitution_id}@{record.constitution_version}"
            options = LabelOptions.from_dict({**record.options, "constitution": ref})
            outcome = await self.labels.label_admitted(LabelCommand(options, raw_pairs))
            # The service numbers results within this chunk: back to the job's indices.
            for local, result in enumerate(outcome.results):
                index = positions[local]
                if isinstance(result, PairError):
                    param = (result.error.param or "").replace(
                        f"pairs.{local}", f"pairs.{index}", 1
                    )
                    detail = result.error.model_copy(update={"param": param or None})
                    result = result.model_copy(update={"index": index, "error": detail})
                out[index] = result
        return sorted(out.items())


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# Per-pair error types that a later delivery may not meet: the chunk is retried (left
# unacknowledged), never stored as the pair's result.
TRANSIENT_ERROR_TYPES = frozenset({"engine_unavailable"})


class ChunkRetry(Exception):
    """The chunk met a transient error: leave it pending, to be delivered again."""


def _pair_id(line: bytes) -> str | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    pair_id = value.get("id") if isinstance(value, dict) else None
    return pair_id if isinstance(pair_id, str) else None


def failed_lines(
    todo: list[tuple[int, bytes]], message: str, error_type: str, param: str | None
) -> list[tuple[int, Label | PairError]]:
    """The same error for each pair of a chunk, named by its place in the job."""
    return [
        (index, PairError.of(_pair_id(line), index, message, type=error_type,
                             param=param if param != "pairs" else f"pairs.{index}"))
        for index, line in todo
    ]  # fmt: skip


class JobConsumer:
    """Takes chunks off the shared stream and labels them, until cancelled.

    `jobs_concurrency` loops run under a supervisor: a loop that ends, for any reason, is
    logged and started again (a loop must never quietly die), and
    `cai_judge_job_consumer_loops` shows how many
    are live. Redis errors never end a loop: it backs off (up to 2 s) and goes on; a chunk
    it could not finish stays pending and is reclaimed, by this consumer or another, once
    idle for `jobs_claim_idle_s`.

    Nothing loops forever (DESIGN.md §5): a chunk the labeler refuses for a reason that
    will not change is written as per-pair errors and acknowledged; a chunk delivered more
    than `jobs_max_deliveries` times goes to the dead letter, its pairs failed with the
    reason. Transient engine errors leave the chunk pending for another delivery.
    """

    def __init__(
        self,
        store: RedisJobStore,
        labeler: ChunkLabeler,
        metrics: ServiceMetrics,
        settings: Settings,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.labeler = labeler
        self.metrics = metrics
        self.settings = settings
        self.name = name or consumer_name()
        self.chunks_done = 0
        self.pairs_done = 0
        self.in_progress = 0
        self.loop_restarts = 0
        self._last_gauges = 0.0
        self._last_forget = time.monotonic()

    async def run(self) -> None:
        """Run `jobs_concurrency` loops, restarting any that ends, until cancelled."""
        logger.info("job consumer %s started", self.name)
        loops: set[asyncio.Task[None]] = set()
        failures = 0
        try:
            while True:
                while len(loops) < self.settings.jobs_concurrency:
                    loops.add(asyncio.create_task(self._loop()))
                    self.metrics.job_consumer_loops.inc()
                done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    loops.discard(task)
                    self.metrics.job_consumer_loops.dec()
                    self.loop_restarts += 1
                    failures += 1
                    why = "was cancelled" if task.cancelled() else repr(task.exception())
                    logger.error("job consumer %s: a loop ended (%s); restarting", self.name, why)
                # Back off when loops keep ending, so a persistent fault does not spin.
                await asyncio.sleep(min(0.05 * 2 ** min(failures, 6), 2.0))
        finally:
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(BaseException):
                    await task
                self.metrics.job_consumer_loops.dec()

    async def _loop(self) -> None:
        errors = 0
        ensure_group = True
        while True:
            try:
                if ensure_group:
                    await self.store.ensure_group()
                    ensure_group = False
                await self.step()
                errors = 0
            except StoreUnavailable as error:
                # A restarted Redis may have lost the group: make it again first.
                errors += 1
                ensure_group = True
                logger.warning("job consumer: Redis error (%r); retrying", error)
                await asyncio.sleep(min(0.1 * 2**errors, 2.0))
            except ChunkRetry as retry:
                logger.warning("job consumer %s: %s", self.name, retry)
                await asyncio.sleep(1.0)
            except Exception:
                # The chunk stays pending and is delivered again after the claim timeout,
                # at most `jobs_max_deliveries` times; the loop outlives one bad chunk.
                logger.exception("job consumer %s: a chunk failed", self.name)
                await asyncio.sleep(1.0)

    async def step(self, block_ms: int = 1000) -> int:
        """Reclaim or read one chunk and label it; returns the chunks handled."""
        await self._housekeeping()
        if self.labeler.admission.draining or self.labeler.admission.engine_dead:
            # Shutting down: take nothing new; what this replica holds is reclaimed.
            await asyncio.sleep(block_ms / 1000)
            return 0
        min_idle_ms = int(self.settings.jobs_claim_idle_s * 1000)
        tasks = await self.store.reclaim(self.name, min_idle_ms, count=1)
        if not tasks:
            tasks = await self.store.read_new(self.name, count=1, block_ms=block_ms)
        for task in tasks:
            await self.process(task)
        return len(tasks)

    async def process(self, task: Task) -> None:
        self.in_progress += 1
        try:
            if task.deliveries > self.settings.jobs_max_deliveries:
                await self._give_up(task)
                return
            try:
                await self._process(task)
            except (StoreUnavailable, asyncio.CancelledError):
                raise
            except Exception as error:
                # Kept for the dead letter, should this chunk never finish.
                with contextlib.suppress(StoreUnavailable):
                    await self.store.note_chunk_failure(task, f"{type(error).__name__}: {error}")
                raise
        finally:
            self.in_progress -= 1

    async def _process(self, task: Task) -> None:
        record = await self.store.get(task.job_id)
        if record is None or record.state in FINAL_STATES:
            await self.store.ack(task.message_id)  # cancelled or expired: nothing to do
            return
        try:
            await asyncio.to_thread(
                self.labeler.registry.resolve,
                f"{record.constitution_id}@{record.constitution_version}",
            )
        except ConstitutionNotFound:
            # Only when a run-time constitution vanished with its Redis data: say so.
            await self.store.finish(
                task.job_id, "failed", f"constitution {record.constitution_id} is gone",
                record.owner,
            )  # fmt: skip
            await self.store.ack(task.message_id)
            return
        await self.store.mark_started(task.job_id)
        finished = await self.store.finished_indices(task.job_id, task.start, task.end)
        lines = await self.store.chunk_input(task.job_id, task.start, task.end)
        todo = [
            (task.start + i, line) for i, line in enumerate(lines) if task.start + i not in finished
        ]
        if todo:
            renewer = asyncio.create_task(self._renew(task))
            try:
                results = await self._label(record, todo)
            except (InvalidRequest, NotFound) as refusal:
                # Refused for what the chunk is (over the token budget, more units than
                # the queue holds): another delivery would be refused alike. Each pair
                # gets the refusal, once, and the chunk is done.
                results = failed_lines(todo, refusal.message, refusal.type, refusal.param)
            finally:
                renewer.cancel()
            transient = [r for _, r in results if isinstance(r, PairError) and _is_transient(r)]
            kept = [(i, r) for i, r in results if not _is_transient(r)]
            await self._write(record, kept)
            if transient:
                raise ChunkRetry(
                    f"{len(transient)} pairs of job {task.job_id} met a transient engine "
                    f"error ({transient[0].error.message}); the chunk will be delivered again"
                )
        await self.store.ack(task.message_id)
        self.chunks_done += 1

    async def _write(self, record: JobRecord, results: list[tuple[int, Label | PairError]]) -> None:
        if not results:
            return
        done, failed, _ = await self.store.write_results(
            record.id,
            [(i, isinstance(r, Label), result_line(r)) for i, r in results],
            record.owner,
        )
        self.metrics.job_pairs.labels(result="done").inc(done)
        self.metrics.job_pairs.labels(result="failed").inc(failed)
        self.pairs_done += done + failed

    async def _give_up(self, task: Task) -> None:
        """A chunk delivered too often: dead-letter it, fail its pairs, acknowledge it."""
        record = await self.store.get(task.job_id)
        if record is not None and record.state not in FINAL_STATES:
            noted = await self.store.chunk_failure(task)
            reason = (
                f"given up after {task.deliveries - 1} deliveries"
                + (f"; the last failed with {noted}" if noted else
                   " (each consumer died or was cut before it finished)")
            )  # fmt: skip
            finished = await self.store.finished_indices(task.job_id, task.start, task.end)
            lines = await self.store.chunk_input(task.job_id, task.start, task.end)
            todo = [
                (task.start + i, line)
                for i, line in enumerate(lines)
                if task.start + i not in finished
            ]
            await self.store.dead_letter(task, reason)
            await self._write(record, failed_lines(todo, reason, "chunk_failed", None))
            logger.error("job %s chunk %d-%d: %s", task.job_id, task.start, task.end, reason)
        await self.store.ack(task.message_id)

    async def _label(
        self, record: JobRecord, todo: list[tuple[int, bytes]]
    ) -> list[tuple[int, Label | PairError]]:
        while True:
            try:
                return await self.labeler.label(record, todo)
            except Unavailable as busy:
                if busy.type in TRANSIENT_ERROR_TYPES:
                    # The engine (a remote fleet) is down: another delivery, later.
                    raise ChunkRetry(f"job {record.id}: {busy.message}") from None
                # Queue full or draining: this chunk waits its turn here.
                await asyncio.sleep(busy.retry_after_s or 1)

    async def _renew(self, task: Task) -> None:
        """Keep this chunk ours while it is labeled: a slow chunk is not a dead consumer."""
        interval = self.settings.jobs_claim_idle_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.store.renew(self.name, task.message_id)
            except StoreUnavailable as error:
                logger.warning("could not renew the claim on a chunk: %s", error)

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_forget >= min(60.0, self.settings.jobs_consumer_forget_s):
            self._last_forget = now
            removed = await self.store.forget_idle_consumers(
                int(self.settings.jobs_consumer_forget_s * 1000), keep=self.name
            )
            if removed:
                logger.info("removed %d dead job consumers from the group", removed)
        if now - self._last_gauges < 5.0:
            return
        self._last_gauges = now
        counts = await self.store.state_counts()
        for state, count in counts.items():
            self.metrics.jobs.labels(state=state).set(count)
        lag, pending = await self.store.group_backlog()
        self.metrics.jobs_consumer_lag.set(lag)
        self.metrics.jobs_pending.set(pending)


def _is_transient(result: Label | PairError) -> bool:
    return isinstance(result, PairError) and result.error.type in TRANSIENT_ERROR_TYPES
