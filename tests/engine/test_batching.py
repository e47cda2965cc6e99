"""The batching decorator (engine/batching.py): shared batches, one computation per
identical unit, per-caller cancellation and per-unit failures. Batching is not the engine's
logic, so it runs on the fake engine (tests/support/fake_engine.py): units that take a few
milliseconds each, refused one by one over the context like vLLM refuses them, and for the
who-waits-for-what races a fake that blocks until released (an exact order of joins and
leaves)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from cai_judge.engine.base import ScoreUnit, ScoreUnitsFailed, UnitScore
from cai_judge.engine.batching import BatchingEngine
from tests.support.fake_engine import (
    FakeEngine,
    blocking_engine,
    everyone_leaves,
    fake_unit,
    rejoin_after_zero,
    settle,
)


class Recorder:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.aborted: list[int] = []


@pytest.fixture
def fake_engine() -> FakeEngine:
    # Long enough per unit that a caller can leave while its batch still runs.
    return FakeEngine(max_model_len=2048, unit_delay_s=0.005)


@pytest_asyncio.fixture(loop_scope="session")
async def batching(fake_engine: FakeEngine) -> AsyncIterator[tuple[BatchingEngine, Recorder]]:
    recorder = Recorder()
    engine = BatchingEngine(
        fake_engine,
        window_s=0.01,
        on_batch=recorder.batches.append,
        on_abort=recorder.aborted.append,
    )
    yield engine, recorder
    await engine.shutdown()


def unit(engine: FakeEngine, text: str, repeat: int = 1) -> ScoreUnit:
    ids = tuple(engine.tokenizer.encode(f"{text} " * repeat + "The answer is: ("))
    return ScoreUnit(ids, (5, 7), prefix_length=0)


async def test_concurrent_callers_share_a_batch_and_identical_units(
    batching: tuple[BatchingEngine, Recorder], fake_engine: FakeEngine
):
    engine, recorder = batching
    shared = unit(fake_engine, "shared unit of two callers")
    mine, yours = unit(fake_engine, "first caller only"), unit(fake_engine, "second only")
    first, second = await asyncio.gather(
        engine.score([mine, shared]), engine.score([shared, yours])
    )
    # One batch of three units: the shared one was computed once for both callers.
    assert recorder.batches == [3]
    assert first[1] is second[0]
    assert [s.prompt_tokens for s in first] == [len(mine.prompt_token_ids),
                                                len(shared.prompt_token_ids)]  # fmt: skip
    # The same units scored directly on the engine give the same numbers.
    direct = await fake_engine.score([mine, shared, yours])
    assert first[0].logprob_a == pytest.approx(direct[0].logprob_a, abs=1e-4)
    assert second[1].logprob_b == pytest.approx(direct[2].logprob_b, abs=1e-4)


async def test_a_caller_leaving_does_not_cancel_a_unit_another_still_wants(
    batching: tuple[BatchingEngine, Recorder], fake_engine: FakeEngine
):
    engine, recorder = batching
    shared = unit(fake_engine, "wanted by the one who stays", repeat=40)
    # The leaver's own long units keep the batch busy long after it leaves.
    own = [unit(fake_engine, f"the leaver's own unit {i}", repeat=100) for i in range(32)]
    leaver = asyncio.create_task(engine.score([shared, *own]))
    stayer = asyncio.create_task(engine.score([shared]))
    while not recorder.batches:  # both now wait on the dispatched batch
        await asyncio.sleep(0.001)
    leaver.cancel()
    [score] = await stayer
    assert score.prompt_tokens == len(shared.prompt_token_ids)
    assert leaver.cancelled()
    assert recorder.aborted == []


async def test_when_every_caller_leaves_the_batch_is_aborted(
    batching: tuple[BatchingEngine, Recorder], fake_engine: FakeEngine
):
    engine, recorder = batching
    units = [unit(fake_engine, f"abandoned unit {i}", repeat=60) for i in range(64)]
    task = asyncio.create_task(engine.score(units))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):
        if recorder.aborted:
            break
        await asyncio.sleep(0.02)
    assert recorder.aborted == [64]
    # The engine still serves new work afterwards.
    [score] = await engine.score([unit(fake_engine, "after the abort")])
    assert score.prompt_tokens > 0


async def test_a_failing_unit_fails_only_its_own_caller(
    batching: tuple[BatchingEngine, Recorder], fake_engine: FakeEngine
):
    engine, recorder = batching
    # Over the engine's context: refused alone, as vLLM refuses it.
    too_long = unit(fake_engine, "word", repeat=2000)
    assert len(too_long.prompt_token_ids) > fake_engine.max_model_len
    good = unit(fake_engine, "a good unit in the same batch")
    sibling = unit(fake_engine, "a sibling request's unit")
    failing, sibling_result = await asyncio.gather(
        engine.score([good, too_long]), engine.score([sibling]), return_exceptions=True
    )
    assert recorder.batches == [3]  # all three went to the engine together
    assert isinstance(failing, ScoreUnitsFailed)
    assert failing.failed_indices == [1]
    assert failing.results[0].prompt_tokens == len(good.prompt_token_ids)  # type: ignore[union-attr]
    assert isinstance(sibling_result, list) and sibling_result[0].prompt_tokens > 0
    # A caller whose units all failed gets the engine's own error, not a partial result.
    with pytest.raises(Exception) as caught:
        await engine.score([too_long])
    assert not isinstance(caught.value, ScoreUnitsFailed)


async def test_a_caller_joining_a_unit_nobody_waited_for_keeps_the_batch():
    """Issue 19: C joined u2 after its waiters had dropped to zero and was not counted, so
    X leaving cancelled the batch under C (CancelledError, HTTP 500)."""
    fake = blocking_engine()
    engine = BatchingEngine(fake, window_s=0)
    [score] = await rejoin_after_zero(engine, fake)
    assert score == UnitScore(-12.0, -1.0, 3, 0)  # u2's own score
    assert len(fake.calls) == 1 and fake.cancelled == []  # one batch, never aborted
    assert len(engine._flights) == 0 and not engine._pending  # nothing left behind
    await engine.shutdown()


async def test_when_every_caller_leaves_the_engine_call_is_cancelled():
    fake = blocking_engine()
    aborted: list[int] = []
    engine = BatchingEngine(fake, window_s=0, on_abort=aborted.append)
    await everyone_leaves(engine, fake)
    assert aborted == [2]
    assert len(engine._flights) == 0 and not engine._pending
    await engine.shutdown()


async def test_a_unit_every_caller_left_before_its_batch_is_never_sent():
    fake = blocking_engine()
    engine = BatchingEngine(fake, window_s=0.05)
    gone = asyncio.create_task(engine.score([fake_unit(31)]))
    await settle()
    gone.cancel()
    await settle()
    fake.release.set()
    [score] = await engine.score([fake_unit(32)])
    assert fake.calls == [[fake_unit(32)]]
    assert score.logprob_a == -32.0
    await engine.shutdown()
