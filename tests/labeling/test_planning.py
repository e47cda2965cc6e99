"""The Judge's planning in chunks (labeling/judge.py, issue 28): the same plan as all at
once, a small plan never queued behind the whole of a large one on the one tokenizing
thread, and a plan over a token budget stopped where it passed it. The fake engine's
tokenizer runs the real rendering code (tests/support/fake_engine.py)."""

from __future__ import annotations

import asyncio
import time

from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import PLAN_CHUNK_PAIRS, Judge
from cai_judge.labeling.options import LabelOptions
from cai_judge.labeling.schema import Pair
from tests.support.api import pair
from tests.support.fake_engine import FakeEngine


def pairs(first: int, count: int, words: int = 30) -> list[Pair]:
    return [Pair(**pair(i, words=words)) for i in range(first, first + count)]


def judge() -> Judge:
    return Judge(FakeEngine(max_model_len=1024), ConstitutionRegistry.with_builtins())


async def test_a_plan_in_chunks_is_the_plan_all_at_once():
    planner = judge()
    spec = planner.resolve("harmless")
    batch = pairs(0, 3 * PLAN_CHUNK_PAIRS + 5)
    batch.append(batch[0])  # a duplicate across chunks shares its units
    chunked = await planner.plan(batch, spec, LabelOptions(principles=3))
    whole = planner._plan(batch, spec, LabelOptions(principles=3))
    assert chunked.units == whole.units
    assert [p.unit_indices for p in chunked.planned] == [p.unit_indices for p in whole.planned]
    assert chunked.prompt_tokens == whole.prompt_tokens and chunked.complete
    planner.close()


async def test_a_small_plan_waits_for_a_chunk_not_for_a_whole_large_plan():
    """Before: one task per plan on a one-thread executor, so a one-pair plan queued behind
    256 pairs × 16 principles waited for all of it."""
    planner = judge()
    options = LabelOptions()
    began = time.perf_counter()
    await planner.plan(pairs(0, 256), "harmless", options)
    alone = time.perf_counter() - began

    async def small() -> float:
        await asyncio.sleep(alone * 0.1)
        began = time.perf_counter()
        await planner.plan(pairs(9999, 1), "harmless", options)
        return time.perf_counter() - began

    began = time.perf_counter()
    _, small_s = await asyncio.gather(planner.plan(pairs(1000, 256), "harmless", options), small())
    print(f"256 pairs × 16 principles planned in {alone:.2f} s alone; one pair meanwhile: "
          f"{small_s * 1000:.0f} ms")  # fmt: skip
    assert small_s < alone * 0.3, (small_s, alone)
    planner.close()


async def test_planning_stops_past_the_token_budget():
    planner = judge()
    batch = pairs(0, 256)
    whole = await planner.plan(batch, "harmless", LabelOptions())
    stopped = await planner.plan(batch, "harmless", LabelOptions(), max_prompt_tokens=10_000)
    assert not stopped.complete
    assert 10_000 < stopped.prompt_tokens < whole.prompt_tokens / 4
    assert len(stopped.planned) == PLAN_CHUNK_PAIRS
    planner.close()
