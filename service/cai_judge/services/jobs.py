"""Batch jobs as use cases: submit, status, results, cancel, and the consumer that labels.

DESIGN.md §5: jobs are durable and at least once, with idempotent writes. A submission
streams its pairs into Redis as they arrive (never the whole job in memory), then creates
the job and queues its chunks in one transaction; Redis unreachable means 503, since a
job that cannot be persisted must not be acknowledged. Every replica (and every
`cai-judge worker`) runs a `JobConsumer` on the shared stream; a dead one's chunks are
reclaimed by the others (store/jobs.py).

Each result line is exactly what /v1/labels returns for that pair, with `index` the
pair's position in the job. Pairs that are not valid JSON or not valid pairs are reported
in their place, as /v1/labels does; they count as `failed`, the rest as `done`.
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
from typing import Any, Literal

from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    wait_exponential,
)

from cai_judge.labeling.constitution import ConstitutionNotFound, ConstitutionRegistry
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.schema import Label, PairError
from cai_judge.services.errors import InvalidRequest, NotFound, Unavailable
from cai_judge.services.labels import LabelCommand, LabelService
from cai_judge.services.metrics import ServiceMetrics
from cai_judge.services.security import Caller
from cai_judge.settings import Settings
from cai_judge.store.jobs import (
    FINAL_STATES,
    IdempotencyKeyReused,
    JobRecord,
    RedisJobStore,
    Task,
)

logger = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_RESULTS_PER_READ = 10_000
# Lines are appended to Redis in batches of this many: the upload's memory bound.
UPLOAD_BATCH_LINES = 1000
# A line longer than this cannot be a valid pair (three texts of MAX_TEXT_CHARS and JSON).
MAX_LINE_BYTES = 4 * 2**20


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job's options: the same as /v1/labels, minus the pairs."""

    constitution: str
    principles: int | Literal["all"] = "all"
    seed: int = 0
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS
    per_principle: bool = False
    calibrated: bool = False
    mode: Literal["plain", "cot"] = "plain"
    cot_max_tokens: int | None = None


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


def _unavailable(what: str, error: BaseException, retry_after_s: int) -> Unavailable:
    return Unavailable(
        f"batch jobs need Redis and it is unreachable ({what}: {type(error).__name__}); "
        "nothing was stored: retry with the same Idempotency-Key",
        type="store_unavailable",
        retry_after_s=retry_after_s,
    )


async def lines_of(chunks: AsyncIterable[bytes], max_line_bytes: int) -> AsyncIterator[bytes]:
    """Non-blank lines of a streamed body, each at most `max_line_bytes`."""
    buffer = b""
    number = 0
    async for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            number += 1
            line = line.strip()
            if line:
                yield line
        if len(buffer) > max_line_bytes:
            raise InvalidRequest(
                f"line {number + 1} is over {max_line_bytes} bytes; one pair per line",
                type="line_too_long",
                param="body",
            )
    if buffer.strip():
        yield buffer.strip()


class JobService:
    """Submit, inspect, read and cancel jobs; `store` None means no Redis configured."""

    def __init__(
        self,
        store: RedisJobStore | None,
        registry: ConstitutionRegistry,
        settings: Settings,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings

    def _require_store(self) -> RedisJobStore:
        if self.store is None:
            raise Unavailable(
                "batch jobs need Redis: set CAI_JUDGE_REDIS_URL (the embedded default keeps "
                "no durable state); /v1/labels works without it",
                type="jobs_not_configured",
                retry_after_s=self.settings.retry_after_s,
            )
        return self.store

    async def submit(
        self,
        spec: JobSpec,
        lines: AsyncIterable[bytes],
        caller: Caller,
        idempotency_key: str | None = None,
    ) -> tuple[JobStatus, bool]:
        """Store the pairs as they stream in, then create the job. Returns (status, created)."""
        store = self._require_store()
        if idempotency_key is not None and not (
            0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS
        ):
            raise InvalidRequest(
                f"Idempotency-Key must have 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
                param="idempotency-key",
            )
        try:
            constitution = self.registry.resolve(spec.constitution)
        except ConstitutionNotFound as error:
            raise NotFound(str(error).strip("'\""), param="constitution") from None
        options = {
            "principles": spec.principles,
            "seed": spec.seed,
            "aggregator": spec.aggregator.value,
            "per_principle": spec.per_principle,
            "calibrated": spec.calibrated,
            "mode": spec.mode,
            "cot_max_tokens": spec.cot_max_tokens,
        }
        digest = hashlib.sha256(
            json.dumps({"constitution": spec.constitution, **options}, sort_keys=True).encode()
        )
        scope = None
        if idempotency_key is not None:
            scope = hashlib.sha256(f"{caller.identity}\0{idempotency_key}".encode()).hexdigest()
        job_id = uuid.uuid4().hex
        retry_after = self.settings.retry_after_s
        total = 0
        try:
            batch: list[bytes] = []
            async for line in lines:
                total += 1
                if total > self.settings.jobs_max_pairs:
                    raise InvalidRequest(
                        f"over the limit of {self.settings.jobs_max_pairs} pairs per job; "
                        "split the file",
                        type="too_many_pairs",
                        param="pairs",
                    )
                digest.update(line)
                digest.update(b"\n")
                batch.append(line)
                if len(batch) >= UPLOAD_BATCH_LINES:
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
                options=options,
            )
            actual_id, created = await store.create(
                record, self.settings.jobs_chunk_pairs, scope, digest.hexdigest()
            )
        except IdempotencyKeyReused as reused:
            await self._discard_quietly(job_id)
            raise InvalidRequest(
                f"this Idempotency-Key made job {reused.job_id} from another body; use a new "
                "key for a new job",
                type="idempotency_key_reused",
                param="idempotency-key",
            ) from None
        except RedisError as error:
            await self._discard_quietly(job_id)
            raise _unavailable("storing the job", error, retry_after) from None
        except BaseException:
            await self._discard_quietly(job_id)
            raise
        if not created:
            await self._discard_quietly(job_id)
        return await self.status(actual_id), created

    async def _discard_quietly(self, job_id: str) -> None:
        if self.store is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.store.discard(job_id)

    async def _record(self, job_id: str) -> JobRecord:
        store = self._require_store()
        try:
            record = await store.get(job_id)
        except RedisError as error:
            raise _unavailable("reading the job", error, self.settings.retry_after_s) from None
        if record is None:
            raise NotFound(f"unknown job {job_id!r} (or its results expired)", param="job_id")
        return record

    async def status(self, job_id: str) -> JobStatus:
        return JobStatus.of(await self._record(job_id))

    async def results(self, job_id: str, cursor: int, limit: int) -> ResultPage:
        record = await self._record(job_id)
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
        try:
            lines = await self.store.results(job_id, cursor, min(limit, record.total - cursor))
        except RedisError as error:
            raise _unavailable("reading results", error, self.settings.retry_after_s) from None
        return ResultPage(lines, cursor + len(lines), record.state, record.total)

    async def cancel(self, job_id: str) -> JobStatus:
        await self._record(job_id)
        assert self.store is not None
        try:
            await self.store.cancel(job_id)
        except RedisError as error:
            raise _unavailable("cancelling", error, self.settings.retry_after_s) from None
        return await self.status(job_id)


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
    ) -> list[tuple[int, bool, bytes]]:
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
            options = record.options
            command = LabelCommand(
                constitution=f"{record.constitution_id}@{record.constitution_version}",
                pairs=raw_pairs,
                principles=options["principles"],
                seed=options["seed"],
                aggregator=Aggregator(options["aggregator"]),
                per_principle=options["per_principle"],
                # Jobs stored before these options existed were plain and uncalibrated.
                calibrated=options.get("calibrated", False),
                mode=options.get("mode", "plain"),
                cot_max_tokens=options.get("cot_max_tokens"),
            )
            outcome = await self.labels.label_admitted(command)
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
        return [(i, isinstance(r, Label), result_line(r)) for i, r in sorted(out.items())]


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class JobConsumer:
    """Takes chunks off the shared stream and labels them, until cancelled.

    Redis errors never end it: it waits (tenacity, exponential backoff up to 2 s) and
    goes on; a chunk it could not finish stays pending and is reclaimed, by this consumer
    or another, once idle for `jobs_claim_idle_s`.
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
        self._last_gauges = 0.0

    async def run(self) -> None:
        logger.info("job consumer %s started", self.name)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((RedisError, OSError)),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            before_sleep=lambda state: logger.warning(
                "job consumer: Redis error (%r); retrying",
                state.outcome and state.outcome.exception(),
            ),
        ):
            with attempt:
                await self.store.ensure_group()
                # Several chunks in flight, so the engine has the next one while this
                # one's results travel to Redis.
                try:
                    async with asyncio.TaskGroup() as loops:  # one fails: all stop, retry
                        for _ in range(self.settings.jobs_concurrency):
                            loops.create_task(self._loop())
                except* (RedisError, OSError) as errors:
                    raise errors.exceptions[0] from None

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except (RedisError, OSError, asyncio.CancelledError):
                raise
            except Exception:
                # The chunk stays pending and is retried after the claim timeout; the
                # consumer itself must outlive one bad chunk.
                logger.exception("job consumer %s: a chunk failed", self.name)
                await asyncio.sleep(1.0)

    async def step(self, block_ms: int = 1000) -> int:
        """Reclaim or read one chunk and label it; returns the chunks handled."""
        await self._refresh_gauges()
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
            await self._process(task)
        finally:
            self.in_progress -= 1

    async def _process(self, task: Task) -> None:
        record = await self.store.get(task.job_id)
        if record is None or record.state in FINAL_STATES:
            await self.store.ack(task.message_id)  # cancelled or expired: nothing to do
            return
        try:
            self.labeler.registry.resolve(f"{record.constitution_id}@{record.constitution_version}")
        except ConstitutionNotFound:
            # Only when a run-time constitution vanished with its Redis data: say so.
            await self.store.finish(
                task.job_id, "failed", f"constitution {record.constitution_id} is gone"
            )
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
            finally:
                renewer.cancel()
            done, failed, _ = await self.store.write_results(task.job_id, results)
            self.metrics.job_pairs.labels(result="done").inc(done)
            self.metrics.job_pairs.labels(result="failed").inc(failed)
            self.pairs_done += done + failed
        await self.store.ack(task.message_id)
        self.chunks_done += 1

    async def _label(
        self, record: JobRecord, todo: list[tuple[int, bytes]]
    ) -> list[tuple[int, bool, bytes]]:
        while True:
            try:
                return await self.labeler.label(record, todo)
            except Unavailable as busy:  # queue full or draining: this chunk waits its turn
                await asyncio.sleep(busy.retry_after_s or 1)

    async def _renew(self, task: Task) -> None:
        """Keep this chunk ours while it is labeled: a slow chunk is not a dead consumer."""
        interval = self.settings.jobs_claim_idle_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.store.renew(self.name, task.message_id)
            except (RedisError, OSError) as error:
                logger.warning("could not renew the claim on a chunk: %r", error)

    async def _refresh_gauges(self) -> None:
        now = time.monotonic()
        if now - self._last_gauges < 5.0:
            return
        self._last_gauges = now
        counts = await self.store.state_counts()
        for state, count in counts.items():
            self.metrics.jobs.labels(state=state).set(count)
        lag, pending = await self.store.group_backlog()
        self.metrics.jobs_consumer_lag.set(lag)
        self.metrics.jobs_pending.set(pending)
