"""Admission: what the service takes on, and what it gives back on shutdown (DESIGN.md §6).

Shared by every transport, so an HTTP request and a gRPC call count against one queue
bound and one drain. The bound is in score units (one principle, one order, one forward
pass), the engine's unit of work, not in requests: one request of 256 pairs and 16
principles weighs what 8,192 single-unit requests do.

Shutdown: on SIGTERM the server calls `start_draining()`: new work gets 503 while admitted
work runs on. At the drain deadline it calls `abort_admitted()`: each admitted request's
engine work is cancelled (vLLM aborts it) and the request ends with `Unavailable` (503 with
Retry-After), never a 500: being cut by a shutdown is the server's choice, not the
client's fault, and the client's retry with the same idempotency key is the recovery.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

from cai_judge.services.errors import InvalidRequest, Unavailable
from cai_judge.services.metrics import ServiceMetrics
from cai_judge.settings import Settings

T = TypeVar("T")


class Admission:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.draining = False
        self.engine_dead = False
        self.queued_units = 0
        self.active_requests = 0
        self._admitted_work: set[asyncio.Future[object]] = set()
        self._aborting = False

    def reject(self, reason: str, error: Unavailable) -> Unavailable:
        self.metrics.admission_rejections.labels(reason=reason).inc()
        return error

    def ensure_open(self) -> None:
        if self.draining or self.engine_dead:
            why = "the engine is dead" if self.engine_dead else "the server is draining"
            raise self.reject(
                "draining",
                Unavailable(
                    f"{why}; retry on another replica",
                    type="draining",
                    retry_after_s=self.settings.retry_after_s,
                ),
            )

    def check_capacity(self, units: int) -> None:
        """422 for work that can never fit; 503 for work that does not fit now."""
        capacity = self.settings.max_queued_units
        if units > capacity:
            raise InvalidRequest(
                f"request needs {units} score units, over the queue capacity of {capacity}; "
                "send fewer pairs or principles",
                type="request_too_large",
                param="pairs",
            )
        if self.queued_units + units > capacity:
            raise self.reject(
                "queue_full",
                Unavailable(
                    f"queue full ({self.queued_units} of {capacity} score units)",
                    type="queue_full",
                    retry_after_s=self.settings.retry_after_s,
                ),
            )

    @asynccontextmanager
    async def enter(self) -> AsyncIterator[None]:
        """A request in flight, from the gate on: the drain waits for it (or cuts it)."""
        self.ensure_open()
        self.active_requests += 1
        self.metrics.inflight.inc()
        try:
            yield
        finally:
            self.active_requests -= 1
            self.metrics.inflight.dec()

    @asynccontextmanager
    async def reserve(self, units: int) -> AsyncIterator[None]:
        """Hold `units` of the queue for the duration of the block."""
        self.check_capacity(units)
        self.queued_units += units
        self.metrics.queue_depth.set(self.queued_units)
        try:
            yield
        finally:
            self.queued_units -= units
            self.metrics.queue_depth.set(self.queued_units)

    async def run(self, work: Awaitable[T]) -> T:
        """Run a request's work so that a shutdown can cut it cleanly."""
        task: asyncio.Future[T] = asyncio.ensure_future(work)
        self._admitted_work.add(task)  # type: ignore[arg-type]
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            # Our caller was not cancelled (no client left): the work was cut by shutdown.
            if self._aborting and current is not None and not current.cancelling():
                raise Unavailable(
                    "the server shut down before this request finished; its engine work was "
                    "aborted: retry it on another replica",
                    type="shutdown",
                    retry_after_s=self.settings.retry_after_s,
                ) from None
            raise
        finally:
            self._admitted_work.discard(task)  # type: ignore[arg-type]

    def start_draining(self) -> None:
        self.draining = True

    def abort_admitted(self) -> int:
        """Cancel every admitted request's engine work; returns how many were cut."""
        self._aborting = True
        work = [w for w in self._admitted_work if not w.done()]
        for item in work:
            item.cancel()
        return len(work)
