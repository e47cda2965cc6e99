"""The job consumer: takes chunks off the shared stream and labels them (DESIGN.md §5).

Apart from services/jobs.py (submit, status, results, cancel) as arq keeps its worker
apart from enqueueing: a replica's API needs no consumer, and `cai-judge worker` is a
consumer with no API. Every replica (`jobs_consumer`) and every worker runs one
`JobConsumer` as a front of the runtime (runtime/fronts.py); a dead one's chunks are
reclaimed by the others (store/jobs.py). A chunk is labeled exactly as /v1/labels labels
its pairs, and each result line is what /v1/labels returns for that pair.

The reasoning at length: docs/internals.md, section "services/job_consumer.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

from cai_judge.labeling.constitution import ConstitutionNotFound
from cai_judge.labeling.options import LabelOptions
from cai_judge.labeling.schema import Label, PairError
from cai_judge.services.errors import InvalidRequest, NotFound, Unavailable
from cai_judge.services.labels import LabelCommand, LabelService
from cai_judge.services.metrics import ServiceMetrics
from cai_judge.settings import Settings
from cai_judge.store.errors import StoreUnavailable
from cai_judge.store.jobs import FINAL_STATES, JobRecord, RedisJobStore, Task

logger = logging.getLogger(__name__)


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
# Refusals of a process that is stopping (draining, or cut at the drain deadline): the
# chunk is left pending for another consumer, never waited on here.
STOPPING_ERROR_TYPES = frozenset({"draining", "shutdown"})


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
                if busy.type in STOPPING_ERROR_TYPES:
                    # This process drains (or its engine died): waiting here would hold
                    # the drain to its deadline for nothing. Left pending, the chunk is
                    # reclaimed by another consumer.
                    raise ChunkRetry(
                        f"job {record.id}: {busy.message}; its chunk is left to another consumer"
                    ) from None
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
