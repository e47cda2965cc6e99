"""LabelStream's flow: pairs in, labels out as they finish, in bounded memory (DESIGN.md §3, §6).

Pairs arriving within the batch window form one `LabelService.label` call, so one-at-a-time
senders do not pay an engine round trip per pair, and groups run concurrently so the
BatchingEngine merges them with every other caller's units. A window of `max_in_flight`
pairs bounds memory: with no free slot nothing is read, and gRPC flow control stops the
client. On a refusal, bad message or SIGTERM, admitted groups finish and the stream ends
with that status; every answer names its pair, so a client resends exactly the rest.

The reasoning at length: docs/internals.md, section "grpc/stream.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cai_judge.labeling.schema import Label, PairError
from cai_judge.services.admission import Admission
from cai_judge.services.errors import ServiceError, Unavailable
from cai_judge.services.labels import LabelCommand, LabelService
from cai_judge.services.security import Caller

# How often a stream waiting for its client's next pair looks at the drain flag.
DRAIN_POLL_S = 0.1
_GROUP_PARAM = re.compile(r"^pairs\.\d+")


@dataclass(frozen=True, slots=True)
class StreamLimits:
    window_s: float
    max_group: int
    max_in_flight: int


@dataclass(frozen=True, slots=True)
class _End:
    """Put on the answer queue once every group has finished."""


class LabelStreamSession:
    """One LabelStream call: `answers(pairs)` yields (stream index, Label | PairError)."""

    def __init__(
        self,
        labels: LabelService,
        admission: Admission,
        caller: Caller,
        command: LabelCommand,
        limits: StreamLimits,
    ) -> None:
        self.labels = labels
        self.admission = admission
        self.caller = caller
        self.command = command
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.max_in_flight)
        self._arrivals: asyncio.Queue[tuple[int, Mapping[str, Any]] | None] = asyncio.Queue()
        self._answers: asyncio.Queue[tuple[int, Label | PairError] | _End] = asyncio.Queue()
        self._groups: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._stopped = asyncio.Event()
        self._read_all = False
        self._unanswered_after_stop = False

    async def answers(
        self, pairs: AsyncIterator[Mapping[str, Any]]
    ) -> AsyncIterator[tuple[int, Label | PairError]]:
        reader = asyncio.create_task(self._read(pairs))
        grouper = asyncio.create_task(self._group())
        try:
            while True:
                answer = await self._answers.get()
                if isinstance(answer, _End):
                    break
                yield answer
                self._slots.release()
        finally:
            # Normal end: all of these are done. A cancelled call: this cancels every
            # group's `label` call, and with it the engine work nobody else waits for.
            for task in (reader, grouper, *self._groups):
                task.cancel()
            for task in (reader, grouper, *self._groups):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._failure is not None:
            raise self._failure
        if self._unanswered_after_stop:
            raise Unavailable(
                "the server is draining and closed this stream after answering the pairs "
                "it had read; resend the pairs that got no answer to another replica",
                type="draining",
                retry_after_s=self.admission.settings.retry_after_s,
            )

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        self._stopped.set()

    async def _read(self, pairs: AsyncIterator[Mapping[str, Any]]) -> None:
        index = 0
        iterator = aiter(pairs)
        try:
            while True:
                await self._slots.acquire()
                try:
                    raw = await anext(iterator)
                except StopAsyncIteration:
                    self._slots.release()
                    break
                self._arrivals.put_nowait((index, raw))
                index += 1
        except ServiceError as error:  # a malformed message
            self._fail(error)
        self._read_all = True
        self._arrivals.put_nowait(None)

    def _should_stop(self) -> bool:
        return self._stopped.is_set() or self.admission.draining

    async def _group(self) -> None:
        """Submit groups until the input ends (True) or the stream must stop (False)."""
        ended = await self._submit_groups()
        if not ended and self._failure is None:
            # Stopped by a drain: fine only if the client had sent its last pair and
            # every pair read went into a group.
            leftover = []
            while not self._arrivals.empty():
                leftover.append(self._arrivals.get_nowait())
            complete = self._read_all and leftover == [None]
            self._unanswered_after_stop = self._unanswered_after_stop or not complete
        self._stopped.set()
        await asyncio.gather(*self._groups, return_exceptions=True)
        self._answers.put_nowait(_End())

    async def _submit_groups(self) -> bool:
        loop = asyncio.get_running_loop()
        while True:
            if self._should_stop():
                return False
            try:
                first = await asyncio.wait_for(self._arrivals.get(), DRAIN_POLL_S)
            except TimeoutError:
                continue
            if first is None:
                return True
            group = [first]
            ended = False
            deadline = loop.time() + self.limits.window_s
            while len(group) < self.limits.max_group and not ended:
                if not self._arrivals.empty():
                    arrival = self._arrivals.get_nowait()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        arrival = await asyncio.wait_for(self._arrivals.get(), remaining)
                    except TimeoutError:
                        break
                if arrival is None:
                    ended = True
                else:
                    group.append(arrival)
            if self._should_stop():
                # Read but never admitted: the client must resend them.
                self._unanswered_after_stop = True
                return False
            task = asyncio.create_task(self._label(group))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)
            if ended:
                return True

    async def _label(self, group: list[tuple[int, Mapping[str, Any]]]) -> None:
        command = replace(self.command, pairs=[raw for _, raw in group])
        try:
            outcome = await self.labels.label(command, self.caller, rate_checked=True)
        except ServiceError as error:
            self._fail(error)
            return
        except Exception as error:
            self._fail(error)
            return
        for (index, _), result in zip(group, outcome.results, strict=True):
            if isinstance(result, PairError):
                detail = result.error
                if detail.param is not None:
                    detail = detail.model_copy(
                        update={"param": _GROUP_PARAM.sub(f"pairs.{index}", detail.param)}
                    )
                result = result.model_copy(update={"index": index, "error": detail})
            self._answers.put_nowait((index, result))
