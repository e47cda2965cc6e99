"""Cross-request batching: concurrent calls share engine batches and identical units.

A dispatcher sends whatever every caller has pending after a short window as one engine
batch, so prefix-group scheduling sees all concurrent requests' units together, and a unit
already pending or running is awaited, not sent again (DESIGN.md §3). A batch is cancelled
only when every caller waiting on it has left (engine/single_flight.py counts them), and a
failed unit costs only its own callers their labels (`ScoreUnitsFailed`).

The reasoning at length: docs/internals.md, section "engine/batching.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from cai_judge.engine.base import (
    Engine,
    GenerationParams,
    GenerationPrompt,
    ScoreUnit,
    ScoreUnitsFailed,
    UnitScore,
    caller_results,
)
from cai_judge.engine.identity import EngineIdentity
from cai_judge.engine.single_flight import Flight, SingleFlight


class BatchingEngine:
    """Wraps an Engine; same interface, with shared batches across concurrent callers."""

    def __init__(
        self,
        engine: Engine,
        window_s: float = 0.002,
        max_batch_units: int = 4096,
        on_batch: Callable[[int], None] | None = None,
        on_abort: Callable[[int], None] | None = None,
    ) -> None:
        self.inner = engine
        self.model_name = engine.model_name
        self.max_model_len = engine.max_model_len
        self.window_s = window_s
        self.max_batch_units = max_batch_units
        self._on_batch = on_batch
        self._on_abort = on_abort
        # Units waiting for the next batch, in arrival order (a dict as an ordered set:
        # a unit every caller left is dropped from it before it is ever sent).
        self._pending: dict[ScoreUnit, None] = {}
        self._flights: SingleFlight[ScoreUnit, UnitScore] = SingleFlight(
            on_abandon=lambda unit: self._pending.pop(unit, None)
        )
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    @property
    def identity(self) -> EngineIdentity:
        return self.inner.identity

    async def score(self, units: Sequence[ScoreUnit]) -> list[UnitScore]:
        flights = await self._flights.wait(units, self._enqueue)
        return caller_results([f.future for f in flights])

    def _enqueue(self, units: list[ScoreUnit]) -> None:
        self._pending.update(dict.fromkeys(units))
        self._ensure_dispatcher()
        self._wakeup.set()

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch_forever())

    async def _dispatch_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.window_s:
                await asyncio.sleep(self.window_s)
            batch_units = list(itertools.islice(self._pending, self.max_batch_units))
            for unit in batch_units:
                del self._pending[unit]
            if self._pending:
                self._wakeup.set()
            if not batch_units:
                continue
            futures = [self._flight(u).future for u in batch_units]
            task = asyncio.create_task(self._run_batch(batch_units, futures))
            self._flights.bind(batch_units, task)
            if self._on_batch is not None:
                self._on_batch(len(batch_units))

    def _flight(self, unit: ScoreUnit) -> Flight[UnitScore]:
        flight = self._flights.get(unit)
        assert flight is not None, "a pending unit always has its flight"
        return flight

    async def _run_batch(
        self, units: list[ScoreUnit], futures: list[asyncio.Future[UnitScore]]
    ) -> None:
        try:
            scores = await self.inner.score(units)
        except asyncio.CancelledError:
            if self._on_abort is not None:
                self._on_abort(len(units))
            for future in futures:
                future.cancel()
            raise
        except ScoreUnitsFailed as partial:  # each waiter gets its own unit's outcome
            for future, outcome in zip(futures, partial.results, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        except Exception as error:  # every waiter gets the engine's error
            for future in futures:
                if not future.done():
                    future.set_exception(error)
        else:
            for future, score in zip(futures, scores, strict=True):
                if not future.done():
                    future.set_result(score)

    async def generate(
        self, prompts: Sequence[GenerationPrompt], params: GenerationParams
    ) -> list[str]:
        return await self.inner.generate(prompts, params)

    async def check_health(self) -> None:
        await self.inner.check_health()

    async def shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
