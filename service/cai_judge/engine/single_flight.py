"""Single flight: concurrent callers asking for the same key share one computation.

DESIGN.md §3 and §5: identical score units across concurrent calls are computed once, by the
batching decorator and by the label cache. Both need the same bookkeeping, and getting it
subtly wrong twice caused a race (a caller joining an entry whose waiters had dropped to
zero went uncounted, and the work was cancelled under it), so it lives here once: a `Work`
counts every caller reference to its flights and is cancelled only when none is left.

The reasoning at length: docs/internals.md, section "engine/single_flight.py".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(eq=False)
class Work:
    """The task resolving a set of flights; `refs` counts every caller reference to them."""

    task: asyncio.Task[None]
    keys: list[Any] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    refs: int = 0


@dataclass(eq=False)
class Flight(Generic[V]):
    future: asyncio.Future[V]
    refs: int = 0
    work: Work | None = None


class SingleFlight(Generic[K, V]):
    """Keyed in-flight computations shared by every caller that asks while they run."""

    def __init__(self, on_abandon: Callable[[K], None] | None = None) -> None:
        self._flights: dict[K, Flight[V]] = {}
        self._on_abandon = on_abandon

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: K) -> Flight[V] | None:
        return self._flights.get(key)

    def join(self, keys: Sequence[K]) -> tuple[list[Flight[V]], list[K]]:
        """One flight per key, counting this caller in each, and the keys nobody was
        computing yet (in order, once each): the caller must arrange their work."""
        loop = asyncio.get_running_loop()
        flights: list[Flight[V]] = []
        new: list[K] = []
        for key in keys:
            flight = self._flights.get(key)
            if flight is None:
                flight = Flight(loop.create_future())
                self._flights[key] = flight
                new.append(key)
            flight.refs += 1
            if flight.work is not None:
                # Always counted, even when this flight's own count had dropped to zero
                # while its work kept running for other flights, or the work is cancelled under it.
                flight.work.refs += 1
            flights.append(flight)
        return flights, new

    def bind(self, keys: Sequence[K], task: asyncio.Task[None]) -> Work:
        """`task` resolves these keys' flights; it is cancelled once nobody wants any of
        them, and its flights are forgotten when it ends."""
        work = Work(task, list(keys))
        for key in keys:
            flight = self._flights[key]
            flight.work = work
            work.futures.append(flight.future)
            work.refs += flight.refs
        task.add_done_callback(lambda _: self._finish(work))
        return work

    def leave(self, flights: Sequence[Flight[V]], keys: Sequence[K]) -> None:
        """This caller no longer waits on these flights (done, failed or cancelled)."""
        for key, flight in zip(keys, flights, strict=True):
            flight.refs -= 1
            work = flight.work
            if work is not None:
                work.refs -= 1
                if work.refs == 0 and not work.task.done():
                    self._forget(work)
                    work.task.cancel()  # nobody waits for any of its flights any more
            elif flight.refs == 0 and self._flights.get(key) is flight:
                del self._flights[key]
                flight.future.cancel()
                if self._on_abandon is not None:
                    self._on_abandon(key)

    async def wait(self, keys: Sequence[K], start: Callable[[list[K]], None]) -> list[Flight[V]]:
        """Join `keys`, let `start` arrange the work for the new ones, wait until every
        flight is resolved, and leave: the caller reads the flights' futures."""
        flights, new = self.join(keys)
        try:
            if new:
                start(new)
            # asyncio.wait, unlike gather, never cancels the shared futures when this
            # caller is cancelled: other callers may still want them.
            await asyncio.wait({f.future for f in flights})
            return flights
        finally:
            self.leave(flights, keys)

    def _forget(self, work: Work) -> None:
        for key in work.keys:
            flight = self._flights.get(key)
            if flight is not None and flight.work is work:
                del self._flights[key]

    def _finish(self, work: Work) -> None:
        self._forget(work)
        # A task cancelled before it first ran never resolved its futures: nobody may
        # hang on one (nobody should be waiting, since its count reached zero).
        for future in work.futures:
            if not future.done():
                future.cancel()
