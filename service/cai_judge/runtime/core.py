"""The one runtime of a serving process: engine, Services, watchdog, signals, drain, fronts.

`cai-judge serve` and `cai-judge worker` differ only in their fronts (serve.py,
worker.py): what takes work in (HTTP, gRPC, the job consumer) or shows it (the metrics
port). Everything else is here once, as vLLM's `serve_http` owns uvicorn's signals and
arq's worker owns its own: start the engine and build the Services, start the fronts in
order, run the engine watchdog, and on SIGTERM/SIGINT, or the engine's death, drain: stop
admitting, wait for the admitted work and the fronts' own in-flight work, cut what is
left at `drain_timeout_s` (503 with Retry-After, never 500), then stop the fronts in
reverse order and close the Services. A second signal ends the wait at once.

Exit status: 0 after a drain; 1 when the engine died (or hung), a front could not start
(a port taken), or a front ended on its own, so the orchestrator restarts the pod.

The reasoning at length: docs/internals.md, section "runtime/".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from cai_judge.engine.base import Engine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.services.container import Services, registry_from_settings
from cai_judge.settings import Settings

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Awaitable[Engine]]

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After cutting admitted work: time for its 503 answers to reach the clients.
ABORT_ANSWER_GRACE_S = 5.0
# How often the drain looks at the work still in flight.
DRAIN_POLL_S = 0.1


class FrontError(RuntimeError):
    """A front cannot start (a port it cannot bind): the message names the setting."""


class Front:
    """One way work comes in (or metrics go out), started and stopped by the runtime.

    A front takes the runtime's Services at `start`, and never owns the engine, the
    Services, the signals or the drain's timing. Work it admits through
    `services.admission` is counted by the runtime already; `in_flight` is what it holds
    beyond that (open streams, chunks in hand), which the drain waits for too.
    """

    name = "front"

    async def start(self, services: Services) -> None:
        """Bind and serve; FrontError (naming the setting) when it cannot."""
        raise NotImplementedError

    async def drain(self) -> None:
        """Admission refuses new work already: tell this front's clients (health)."""

    @property
    def in_flight(self) -> int:
        return 0

    async def wait(self) -> None:
        """Returns (or raises) only if the front ends on its own, which fails the process."""
        await asyncio.Event().wait()

    async def stop(self) -> None:
        """Stop serving; called once the drain is over, in reverse start order."""
        raise NotImplementedError


async def start_serving_engine(settings: Settings) -> Engine:
    from cai_judge.engine.factory import start_engine

    return await start_engine(settings, serving=True)


class Runtime:
    """The process around a list of fronts. `run()` is a whole serving process;
    `serving()` the same without signals or drain, for an app embedded in tests.

    With `engine` given (tests) it is used and left running; otherwise the runtime starts
    it and shuts it down.
    """

    def __init__(
        self,
        settings: Settings,
        fronts: Sequence[Front],
        *,
        engine: Engine | None = None,
        registry: ConstitutionRegistry | None = None,
        engine_factory: EngineFactory = start_serving_engine,
        on_engine_dead: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.fronts = list(fronts)
        self.engine = engine
        self.registry = registry
        self.engine_factory = engine_factory
        self.on_engine_dead = on_engine_dead
        self.services: Services | None = None
        # Why the process failed (a front that could not start or ended), for its status.
        self.failure: str | None = None
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._signals = 0

    @property
    def engine_dead(self) -> bool:
        return self.services is not None and self.services.admission.engine_dead

    @property
    def exit_status(self) -> int:
        return 1 if self.failure is not None or self.engine_dead else 0

    def request_stop(self) -> None:
        """Drain and stop (the first signal); a second call ends the drain at once."""
        self._signals += 1
        if self._signals == 1:
            self._stop.set()
        else:
            self._force.set()

    def _engine_died(self) -> None:
        # The watchdog marked admission `engine_dead`: this process serves no more.
        self._stop.set()
        if self.on_engine_dead is not None:
            self.on_engine_dead()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Services]:
        """Engine, Services, watchdog, then each front in order; stopped in reverse."""
        registry = (
            self.registry if self.registry is not None else registry_from_settings(self.settings)
        )
        engine = (
            self.engine if self.engine is not None else await self.engine_factory(self.settings)
        )
        try:
            services = Services.build(self.settings, engine, registry)
            self.services = services
            async with self._fronts_running(services):
                yield services
        finally:
            if self.engine is None:
                try:
                    await engine.shutdown()
                except Exception as error:  # a dead engine may fail to shut down
                    logger.warning("the engine did not shut down cleanly: %r", error)

    @asynccontextmanager
    async def _fronts_running(self, services: Services) -> AsyncIterator[None]:
        watchdog = asyncio.create_task(services.health.watch_engine(self._engine_died))
        started: list[Front] = []
        try:
            for front in self.fronts:
                await front.start(services)
                started.append(front)
            yield
        finally:
            for front in reversed(started):
                try:
                    await front.stop()
                except Exception:  # the others still stop, and the Services still close
                    logger.exception("the %s front did not stop cleanly", front.name)
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await services.close()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT or the engine's death, drain, stop; the exit status."""
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.request_stop)
        try:
            async with self.serving() as services:
                await self._until_stopped()
                await self._drain(services)
        except FrontError as error:
            logger.error("%s", error)
            self.failure = str(error)
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
        return self.exit_status

    async def _until_stopped(self) -> None:
        """Until a signal or the engine's death, or a front ending on its own (a failure)."""
        stopped: asyncio.Task[object] = asyncio.create_task(self._stop.wait())
        watchers: dict[asyncio.Task[object], Front] = {
            asyncio.create_task(front.wait()): front for front in self.fronts
        }
        try:
            done, _ = await asyncio.wait({stopped, *watchers}, return_when="FIRST_COMPLETED")
        finally:
            for task in (stopped, *watchers):
                task.cancel()
        for task, front in watchers.items():
            if task not in done:
                continue
            error = None if task.cancelled() else task.exception()
            self.failure = f"the {front.name} front ended on its own" + (
                f": {error!r}" if error is not None else ""
            )
            logger.error("%s; stopping", self.failure)

    async def _drain(self, services: Services) -> None:
        """Stop admitting, wait for the work in flight, cut it at the deadline."""
        admission = services.admission
        admission.start_draining()
        for front in self.fronts:
            await front.drain()
        deadline = time.monotonic() + self.settings.drain_timeout_s
        answer_deadline: float | None = None
        while not self._force.is_set():
            if admission.active_requests == 0 and not any(f.in_flight for f in self.fronts):
                return
            now = time.monotonic()
            if answer_deadline is None and now >= deadline:
                cut = admission.abort_admitted()
                logger.warning("drain timeout: cut %d request(s), answering them 503", cut)
                answer_deadline = now + ABORT_ANSWER_GRACE_S
            elif answer_deadline is not None and now >= answer_deadline:
                return
            await asyncio.sleep(DRAIN_POLL_S)
