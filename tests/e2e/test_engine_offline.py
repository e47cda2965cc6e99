"""The in-process engine core (the offline CLI's engine) against the subprocess one.

Both run the real vLLM CPU build on the tiny model; the in-process engine must give the
same numbers, keep the prefix-cache schedule, fail a refused unit alone, abort what its
caller cancels and stop cleanly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from cai_judge.engine.base import EngineError, GenerationParams, ScoreUnit, ScoreUnitsFailed
from cai_judge.engine.vllm_async import VllmEngine, VllmEngineConfig
from cai_judge.engine.vllm_offline import OfflineVllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import LabelOptions, Pair

pytestmark = pytest.mark.engine

PAIRS = [
    Pair(
        id=f"p{i}",
        prompt=f"Question {i}: how should I store passwords?",
        response_a="Hash them with a slow, salted function such as argon2. " * (i + 1),
        response_b="Keep them in a plain text file.",
    )
    for i in range(3)
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def inprocess_engine(tiny_model_dir: Path) -> AsyncIterator[OfflineVllmEngine]:
    engine = await OfflineVllmEngine.start(
        VllmEngineConfig(model=str(tiny_model_dir), max_model_len=1024, cpu_kv_cache_gib=1)
    )
    yield engine
    await engine.shutdown()


@pytest.fixture(scope="module")
def inprocess_judge(
    inprocess_engine: OfflineVllmEngine, registry: ConstitutionRegistry
) -> Iterator[Judge]:
    judge = Judge(inprocess_engine, registry)
    yield judge
    judge.close()


def _answers(engine: OfflineVllmEngine) -> tuple[int, int]:
    return (
        engine.tokenizer.convert_tokens_to_ids("A"),
        engine.tokenizer.convert_tokens_to_ids("B"),
    )


async def test_labels_match_the_subprocess_engine(
    inprocess_judge: Judge, tiny_engine: VllmEngine, registry: ConstitutionRegistry
):
    spec = registry.resolve("harmless")
    options = LabelOptions(principles=4, seed=3)
    ours = await inprocess_judge.label(PAIRS, spec, options)
    subprocess_judge = Judge(tiny_engine, registry)
    try:
        theirs = await subprocess_judge.label(PAIRS, spec, options)
    finally:
        subprocess_judge.close()
    assert not ours.errors and len(ours.labels) == len(PAIRS)
    for mine, other in zip(ours.labels, theirs.labels, strict=True):
        assert mine.preferred == other.preferred
        assert mine.margin == pytest.approx(other.margin, abs=1e-4)
        assert mine.p_a == pytest.approx(other.p_a, abs=1e-5)
    # The same schedule: each order's prefix computed once, its followers read it cached.
    assert ours.usage.prompt_tokens == theirs.usage.prompt_tokens
    assert ours.usage.cached_prompt_tokens >= 3 * 2 * 3 * 32  # 3 followers x 2 orders x 3 pairs


async def test_a_refused_unit_fails_alone(inprocess_engine: OfflineVllmEngine):
    ids = tuple(inprocess_engine.tokenizer.encode("Consider the following conversation."))
    too_long = ids * (inprocess_engine.max_model_len // len(ids) + 1)
    answers = _answers(inprocess_engine)
    units = [
        ScoreUnit((*ids, 10), answers, len(ids)),
        ScoreUnit((*too_long, 10), answers, len(too_long)),
        ScoreUnit((*ids, 11), answers, 0),
    ]
    with pytest.raises(ScoreUnitsFailed) as caught:
        await inprocess_engine.score(units)
    assert caught.value.failed_indices == [1]
    assert str(inprocess_engine.max_model_len) in str(caught.value.results[1])
    # The engine goes on serving after a refusal.
    assert len(await inprocess_engine.score([units[0], units[2]])) == 2


def _hold_engine_thread(
    engine: OfflineVllmEngine,
) -> tuple[threading.Event, threading.Event, asyncio.Future[Any]]:
    """Park the engine thread inside a call until released: what is queued behind the
    call then reaches the engine in a known order, with no step in between."""
    entered, release = threading.Event(), threading.Event()

    def hold(_engine: object) -> None:
        entered.set()
        release.wait(timeout=30)

    return entered, release, asyncio.ensure_future(engine._call(hold))


async def test_a_cancelled_caller_leaves_no_work_behind(inprocess_engine: OfflineVllmEngine):
    answers = _answers(inprocess_engine)
    base = tuple(inprocess_engine.tokenizer.encode("A long prompt to keep the engine busy."))
    units = [ScoreUnit((i, *base * (900 // len(base))), answers, 0) for i in range(64)]

    def unfinished(engine: object) -> int:
        return int(engine.get_num_unfinished_requests())  # type: ignore[attr-defined]

    # Hold the thread; queue the caller's requests behind it, then a second hold.
    first_entered, first_release, first_hold = _hold_engine_thread(inprocess_engine)
    await asyncio.to_thread(first_entered.wait, 10)
    task = asyncio.create_task(inprocess_engine.score(units))
    commands = inprocess_engine._thread._commands  # type: ignore[union-attr]
    while commands.qsize() < len(units):
        await asyncio.sleep(0.01)
    second_entered, second_release, second_hold = _hold_engine_thread(inprocess_engine)
    first_release.set()
    await asyncio.to_thread(second_entered.wait, 10)
    # Every request is now inside vLLM and no step has run: cancelling must abort them.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    second_release.set()
    await asyncio.gather(first_hold, second_hold)
    assert await inprocess_engine._call(unfinished) == 0
    [score] = await inprocess_engine.score(units[:1])
    assert score.prompt_tokens == len(units[0].prompt_token_ids)


async def test_seeded_generation_repeats(inprocess_engine: OfflineVllmEngine):
    params = GenerationParams(max_tokens=8, temperature=1.0, seed=7)
    first = await inprocess_engine.generate(["Once upon a time"] * 2, params)
    again = await inprocess_engine.generate(["Once upon a time"], params)
    assert first[0] == first[1] == again[0]
    assert first[0]


async def test_reports_the_same_identity_as_the_subprocess_engine(
    inprocess_engine: OfflineVllmEngine, tiny_engine: VllmEngine
):
    """Same checkpoint, same dtype: one cache serves both engines (engine/identity.py)."""
    assert inprocess_engine.identity == tiny_engine.identity
    assert inprocess_engine.identity.dtype == "float32"


# Last but one in this module: it shuts the module's engine down.
async def test_health_and_shutdown(inprocess_engine: OfflineVllmEngine):
    engine = inprocess_engine
    await asyncio.wait_for(engine.check_health(), timeout=10)
    answers = _answers(engine)
    await engine.shutdown()
    with pytest.raises(EngineError, match="shut down"):
        await engine.score([ScoreUnit((1, 2, 3), answers, 0)])
    with pytest.raises(EngineError, match="shut down"):
        await engine.check_health()
    await engine.shutdown()  # twice is harmless


async def test_a_second_engine_starts_after_the_first_stopped(
    inprocess_engine: OfflineVllmEngine, tiny_model_dir: Path
):
    """`cai-judge compare --model-a X --model-b Y` runs one engine after the other in one
    process: vLLM's state from the first must not stop the second."""
    assert inprocess_engine._thread is None, "runs after test_health_and_shutdown"
    engine = await OfflineVllmEngine.start(
        VllmEngineConfig(model=str(tiny_model_dir), max_model_len=512, cpu_kv_cache_gib=1)
    )
    try:
        ids = tuple(engine.tokenizer.encode("Consider the following conversation."))
        [score] = await engine.score([ScoreUnit(ids, _answers(engine), 0)])
        assert score.prompt_tokens == len(ids)
    finally:
        await engine.shutdown()


def _overflowing_groups(engine: OfflineVllmEngine, groups: int) -> list[ScoreUnit]:
    """`groups` prefix groups of 4 units: a 192-token prefix of its own (its first token
    differs from every other group's, so groups share nothing) and a 32-token tail each."""
    answers = _answers(engine)
    units = []
    for group in range(groups):
        prefix = tuple((group * 119 + i * 31) % 600 + 10 for i in range(192))
        for principle in range(4):
            tail = tuple((principle * 13 + i * 7) % 600 + 10 for i in range(32))
            units.append(ScoreUnit(prefix + tail, answers, len(prefix)))
    return units


async def test_followers_first_keeps_prefixes_cached_past_the_cache_size(
    tiny_model_dir: Path,
):
    """128 prefix groups (29k prompt tokens) through a KV cache of 8k tokens, sent at once
    as a big request is. In vLLM's FIFO order each follower queues behind every leader
    sent before it, and by its turn its prefix has been evicted; followers first, it
    finds its prefix cached. The same units, scored alike, on one engine after the other."""
    uncached: dict[str, int] = {}
    scores: dict[str, list[tuple[float, float]]] = {}
    for order in ("fifo", "followers_first"):
        engine = await OfflineVllmEngine.start(
            VllmEngineConfig(
                model=str(tiny_model_dir),
                max_model_len=512,
                kv_cache_blocks=256,  # × 32-token blocks = 8,192 tokens
                max_num_batched_tokens=1024,
                score_order=order,  # type: ignore[arg-type]
            )
        )
        try:
            units = _overflowing_groups(engine, 128)
            assert sum(len(u.prompt_token_ids) for u in units[::4]) > 3 * 8192
            results = await engine.score(units)
        finally:
            await engine.shutdown()
        uncached[order] = sum(r.prompt_tokens - r.cached_tokens for r in results)
        scores[order] = [(r.logprob_a, r.logprob_b) for r in results]
    # Every prefix computed once and each follower only its tail: 128 × (224 + 3 × 32);
    # a group whose followers missed their prefix computes its 192 tokens once more (they
    # run in one step, which shares them). Measured: fifo recomputed all 128, followers
    # first none.
    floor = 128 * (224 + 3 * 32)
    recomputed = {order: (tokens - floor) / 192 for order, tokens in uncached.items()}
    assert recomputed["followers_first"] <= 6, uncached
    assert recomputed["fifo"] >= 64, uncached
    for fifo, first in zip(scores["fifo"], scores["followers_first"], strict=True):
        assert fifo == pytest.approx(first, abs=1e-4)
