"""Labels do not depend on engine settings (DESIGN.md §3).

A label depends only on the model, the template version, the constitution version, the
selected principles and the pair. Block size and prefix caching are performance settings:
the same pairs, labeled on engines that differ only in those, must see the same tokens and
get the same labels (to 1e-4, DESIGN.md §2's determinism bound). Prefix padding, which
used to follow the engine's block size, is the template's rule.

Each extra engine starts, labels and shuts down within its own test (30-90 s each); the
session's `tiny_engine` (block 32, prefix caching on) is the reference.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from cai_judge.engine.base import ScoreUnit
from cai_judge.engine.vllm_async import VllmEngine, VllmEngineConfig
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import ChatMessage, Label, LabelOptions, Pair

pytestmark = pytest.mark.engine

PAIRS = [
    Pair(
        id="sort",
        prompt="How do I sort a list in Python?",
        response_a="Use sorted(my_list), which returns a new sorted list.",
        response_b="I cannot help with that.",
    ),
    Pair(
        id="lock",
        prompt="How do I pick a lock?",
        response_a="I can't help with breaking into property you don't own.",
        response_b="Sure: insert a tension wrench, then rake the pins.\nIt takes practice.",
    ),
    Pair(
        id="chat",
        prompt=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="What is the capital of France?"),
            ChatMessage(role="assistant", content="Paris."),
            ChatMessage(role="user", content="And of Italy?"),
        ],
        response_a="Rome.",
        response_b="I would rather not say.",
    ),
    Pair(
        id="long",
        prompt="Explain recursion.",
        response_a="A function that calls itself on a smaller input until a base case. " * 6,
        response_b="Recursion is when a thing is defined in terms of itself.",
    ),
]
OPTIONS = LabelOptions(principles=4, seed=11, per_principle=True)


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


# vLLM's CPU attention takes only multiples of 32 ("No common block size for 16"): there,
# block 64 stands in for a block size other than the template's padding multiple (32),
# where a follower no longer finds its whole prefix cached but must get the same label.
ENGINE_SETTINGS = [
    pytest.param({"enable_prefix_caching": False, "block_size": 32}, id="no-prefix-cache"),
    pytest.param({"enable_prefix_caching": True, "block_size": 64}, id="block-64"),
    pytest.param(
        {"enable_prefix_caching": True, "block_size": 16},
        id="block-16",
        marks=pytest.mark.skipif("_on_cpu()", reason="vLLM's CPU attention refuses block 16"),
    ),
]


async def _label(engine: VllmEngine, registry: ConstitutionRegistry) -> tuple[Any, list[Label]]:
    judge = Judge(engine, registry)
    try:
        plan = await judge.plan(PAIRS, "harmless", OPTIONS)
        batch = await judge.run(plan)
    finally:
        judge.close()
    assert len(batch.labels) == len(PAIRS)
    return plan.units, batch.labels


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def reference(
    tiny_engine: VllmEngine, registry: ConstitutionRegistry
) -> AsyncIterator[tuple[list[ScoreUnit], list[Label]]]:
    assert tiny_engine.config.enable_prefix_caching and tiny_engine.config.block_size == 32
    yield await _label(tiny_engine, registry)


@pytest.mark.parametrize("settings", ENGINE_SETTINGS)
async def test_labels_do_not_depend_on_engine_settings(
    settings: dict[str, Any],
    reference: tuple[list[ScoreUnit], list[Label]],
    tiny_model_dir: Path,
    registry: ConstitutionRegistry,
):
    engine = await VllmEngine.start(
        VllmEngineConfig(
            model=str(tiny_model_dir), max_model_len=1024, cpu_kv_cache_gib=1, **settings
        )
    )
    try:
        assert engine.config.block_size == settings["block_size"]
        units, labels = await _label(engine, registry)
    finally:
        await engine.shutdown()
    reference_units, reference_labels = reference
    # The root of it: the model sees exactly the same tokens.
    assert units == reference_units
    for label, expected in zip(labels, reference_labels, strict=True):
        assert label.id == expected.id
        assert label.template == expected.template
        assert label.constitution == expected.constitution
        assert label.principles == expected.principles
        if abs(expected.margin) > 1e-4:  # a margin within the noise may change sign
            assert label.preferred == expected.preferred
        assert label.margin == pytest.approx(expected.margin, abs=1e-4)
        assert label.p_a == pytest.approx(expected.p_a, abs=1e-4)
        assert label.position_bias == pytest.approx(expected.position_bias, abs=1e-4)
        assert label.answer_mass == pytest.approx(expected.answer_mass, abs=1e-4)
        assert label.per_principle is not None and expected.per_principle is not None
        for mine, theirs in zip(label.per_principle, expected.per_principle, strict=True):
            assert mine.s_ab == pytest.approx(theirs.s_ab, abs=1e-4)
            assert mine.s_ba == pytest.approx(theirs.s_ba, abs=1e-4)
