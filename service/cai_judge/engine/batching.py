"""Cross-request batching: concurrent calls share engine batches and identical units.

Every `score` call (one HTTP request, say) puts its units into a shared pending list.
A dispatcher takes whatever is pending after a short window and sends it to the engine
as one batch, so the engine's prefix-group scheduling sees the units of all concurrent
requests together. A unit already pending or running is not sent again: its callers
wait on the same future (DESIGN.md §3: identical units across concurrent calls are
computed once).

Cancellation is per caller: when every caller waiting on a batch has gone away (a client
disconnected), the batch task is cancelled, which makes vLLM abort those requests.

Failures are per unit where the engine can tell them apart (`ScoreUnitsFailed`): a batch
mixes the units of many requests, and one request's bad unit must not cost its siblings
their labels. A caller whose units all failed gets the engine's error; a caller with some
failed units gets `ScoreUnitsFailed` with its own units' results.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(eq=False)
class _Batch:
    live_units: int
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Entry:
    future: asyncio.Future[UnitScore]
    waiters: int = 0
    batch: _Batch | None = None


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
        self._entries: dict[ScoreUnit, _Entry] = {}
        self._pending: list[ScoreUnit] = []
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    async def score(self, units: Sequence[ScoreUnit]) -> list[UnitScore]:
        loop = asyncio.get_running_loop()
        entries: list[_Entry] = []
        for unit in units:
            entry = self._entries.get(unit)
            if entry is None or (entry.batch is not None and entry.batch.live_units == 0):
                # New, or its batch is being aborted because all its callers left.
                entry = _Entry(loop.create_future())
                self._entries[unit] = entry
                self._pending.append(unit)
            entry.waiters += 1
            entries.append(entry)
        self._ensure_dispatcher()
        self._wakeup.set()
        try:
            # asyncio.wait, unlike gather, never cancels the shared futures when this
            # caller is cancelled: other callers may still want them.
            await asyncio.wait([e.future for e in entries])
            return caller_results([e.future for e in entries])
        finally:
            self._release(units, entries)

    def _release(self, units: Sequence[ScoreUnit], entries: list[_Entry]) -> None:
        for unit, entry in zip(units, entries, strict=True):
            entry.waiters -= 1
            if entry.waiters > 0 or entry.future.done():
                continue
            if entry.batch is None:  # still pending: just forget it
                with contextlib.suppress(ValueError):
                    self._pending.remove(unit)
                self._entries.pop(unit, None)
                entry.future.cancel()
                continue
            entry.batch.live_units -= 1
            if entry.batch.live_units == 0 and entry.batch.task is not None:
                entry.batch.task.cancel()

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch_forever())

    async def _dispatch_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.window_s:
                await asyncio.sleep(self.window_s)
            batch_units = self._pending[: self.max_batch_units]
            del self._pending[: self.max_batch_units]
            if self._pending:
                self._wakeup.set()
            if not batch_units:
                continue
            batch = _Batch(live_units=len(batch_units))
            entries = [self._entries[u] for u in batch_units]
            for entry in entries:
                entry.batch = batch
            batch.task = asyncio.create_task(self._run_batch(batch_units, entries))
            if self._on_batch is not None:
                self._on_batch(len(batch_units))

    async def _run_batch(self, units: list[ScoreUnit], entries: list[_Entry]) -> None:
        try:
            scores = await self.inner.score(units)
        except asyncio.CancelledError:
            if self._on_abort is not None:
                self._on_abort(len(units))
            for entry in entries:
                entry.future.cancel()
            raise
        except ScoreUnitsFailed as partial:  # each waiter gets its own unit's outcome
            for entry, outcome in zip(entries, partial.results, strict=True):
                if entry.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    entry.future.set_exception(outcome)
                else:
                    entry.future.set_result(outcome)
        except Exception as error:  # every waiter gets the engine's error
            for entry in entries:
                if not entry.future.done():
                    entry.future.set_exception(error)
        else:
            for entry, score in zip(entries, scores, strict=True):
                if not entry.future.done():
                    entry.future.set_result(score)
        finally:
            for unit, entry in zip(units, entries, strict=True):
                if self._entries.get(unit) is entry:
                    del self._entries[unit]

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
