"""A fake engine whose `score` blocks until the test releases it.

Only for logic that is not the engine's (the handbook's rule): the single-flight counting
of the batching decorator and the label cache (engine/single_flight.py). A real engine
finishes on its own schedule; these tests need every caller to join and leave while one
engine call is still running, in an exact order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from cai_judge.engine.base import GenerationParams, GenerationPrompt, ScoreUnit, UnitScore


class BlockingEngine:
    model_name = "blocking-fake"
    max_model_len = 1024
    tokenizer: Any = None

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls: list[list[ScoreUnit]] = []
        self.cancelled: list[list[ScoreUnit]] = []

    async def score(self, units: Sequence[ScoreUnit]) -> list[UnitScore]:
        self.calls.append(list(units))
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(list(units))
            raise
        # A score that names its unit, so a caller can tell it got its own.
        return [
            UnitScore(-float(u.prompt_token_ids[0]), -1.0, len(u.prompt_token_ids), 0)
            for u in units
        ]

    async def generate(
        self, prompts: Sequence[GenerationPrompt], params: GenerationParams
    ) -> list[str]:
        raise NotImplementedError

    async def check_health(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def fake_unit(token: int) -> ScoreUnit:
    return ScoreUnit((token, 2, 3), (5, 7), prefix_length=0)


async def settle() -> None:
    """Let every ready task run until nothing changes (joins, leaves, cancellations)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def rejoin_after_zero(engine: Any, fake: BlockingEngine) -> list[UnitScore]:
    """Issue 19's sequence, on a decorator over `fake`: A scores [u1, u2] → X joins u1 →
    A cancels (u2's count drops to zero, the work runs on for X) → C asks for u2 → X
    cancels. C is the only caller left, so the work must run on for it: C's result."""
    u1, u2 = fake_unit(11), fake_unit(12)
    a = asyncio.create_task(engine.score([u1, u2]))
    await asyncio.wait_for(fake.entered.wait(), 5)  # the engine now computes u1 and u2
    x = asyncio.create_task(engine.score([u1]))
    await settle()
    a.cancel()
    await settle()
    c = asyncio.create_task(engine.score([u2]))
    await settle()
    x.cancel()
    await settle()
    assert a.cancelled() and x.cancelled()
    fake.release.set()
    return await asyncio.wait_for(c, 5)


async def everyone_leaves(engine: Any, fake: BlockingEngine) -> None:
    """Two callers share a running engine call, then both leave: it must be cancelled."""
    u1, u2 = fake_unit(21), fake_unit(22)
    a = asyncio.create_task(engine.score([u1, u2]))
    await asyncio.wait_for(fake.entered.wait(), 5)
    x = asyncio.create_task(engine.score([u2]))
    await settle()
    x.cancel()
    await settle()
    assert fake.cancelled == []  # A still wants both units
    a.cancel()
    await settle()
    assert fake.cancelled == [[u1, u2]]
