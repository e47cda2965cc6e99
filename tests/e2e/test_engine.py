"""The real vLLM CPU engine on a tiny random Llama: scores, prefix caching, the Judge."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from cai_judge.engine.base import GenerationParams, ScoreUnit, ScoreUnitsFailed, UnitScore
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry, parse_constitution
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import Label, LabelOptions, Pair, PairError
from cai_judge.labeling.templates import TEMPLATES

pytestmark = pytest.mark.engine

PAIR = Pair(
    id="p1",
    prompt="How do I sort a list in Python?",
    response_a="Use sorted(my_list), which returns a new sorted list.",
    response_b="I cannot help with that.",
)


@pytest.fixture(scope="module")
def judge(tiny_engine: VllmEngine, registry: ConstitutionRegistry) -> Iterator[Judge]:
    judge = Judge(tiny_engine, registry)
    yield judge
    judge.close()


async def test_scores_match_a_transformers_forward_pass(
    tiny_engine: VllmEngine, tiny_model_dir: Path
):
    ids = tiny_engine.tokenizer.encode("Consider the following conversation. The answer is: (")
    answer = (tiny_engine.tokenizer.convert_tokens_to_ids("A"), 7)
    [score] = await tiny_engine.score([ScoreUnit(tuple(ids), answer, len(ids))])

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    expected = torch.log_softmax(logits.double(), dim=-1)
    assert score.logprob_a == pytest.approx(float(expected[answer[0]]), abs=2e-3)
    assert score.logprob_b == pytest.approx(float(expected[answer[1]]), abs=2e-3)
    assert score.prompt_tokens == len(ids)


async def test_prefix_cache_serves_the_second_principle(judge: Judge, tiny_engine: VllmEngine):
    spec = judge.registry.resolve("harmless")
    fresh = PAIR.model_copy(update={"response_a": "A response no other test uses. " * 8})
    plan = await judge.plan([fresh], spec, LabelOptions(principles="all"))
    units = plan.units
    ab_units = [u for u in units if u.prefix_key == units[0].prefix_key]
    assert len(ab_units) == 16 and ab_units[0].prefix_length > 64
    scores = await tiny_engine.score(ab_units)
    # The template pads prefixes to a multiple of 32 tokens, whole KV blocks of this
    # engine, so the leader computes the order's prefix (only the template's constant
    # head may be cached by earlier work) and every follower finds all of it cached: a
    # follower computes nothing but its principle tail.
    prefix = ab_units[0].prefix_length
    multiple = TEMPLATES[spec.template].prefix_pad_multiple
    assert tiny_engine.config.block_size is not None
    assert multiple % tiny_engine.config.block_size == 0  # the premise
    assert prefix % multiple == 0
    assert scores[0].cached_tokens < prefix
    assert all(s.cached_tokens == prefix for s in scores[1:])


async def test_swapped_pair_is_antisymmetric_to_the_bit(judge: Judge):
    batch = await judge.label(
        [PAIR, PAIR.swapped().model_copy(update={"id": "p1-swap"})], "harmless"
    )
    label, mirror = batch.results
    assert isinstance(label, Label) and isinstance(mirror, Label)
    assert mirror.margin == -label.margin
    assert mirror.p_a == 1 - label.p_a
    assert mirror.principles == label.principles
    # A pair and its swap share every score unit: 16 principles x 2 orders, sent once.
    assert batch.usage.score_units == 32
    assert batch.usage.pairs == 2


async def test_labels_are_deterministic_across_calls(judge: Judge):
    options = LabelOptions(principles=4, seed=7, per_principle=True)
    first = (await judge.label([PAIR], "harmless", options)).labels[0]
    second = (await judge.label([PAIR], "harmless", options)).labels[0]
    assert first.principles == second.principles
    assert len(first.principles) == 4
    assert first.margin == pytest.approx(second.margin, abs=1e-4)
    assert first.per_principle is not None and len(first.per_principle) == 4
    assert first.constitution.id == "harmless"
    assert first.model == judge.engine.model_name


async def test_selected_principles_follow_the_seed(judge: Judge):
    picks = set()
    for seed in range(6):
        batch = await judge.label([PAIR], "harmless", LabelOptions(principles=2, seed=seed))
        picks.add(tuple(batch.labels[0].principles))
    assert len(picks) > 1


async def test_pair_over_the_context_is_reported_and_the_rest_labeled(judge: Judge):
    too_long = Pair(id="long", prompt="hi", response_a="word " * 3000, response_b="short")
    plan = await judge.plan([too_long, PAIR], "harmless", LabelOptions(principles=1))
    # Refused while planning, before any engine work: a service can answer at once.
    assert [(e.id, e.index) for e in plan.errors] == [("long", 0)]
    assert len(plan.units) == 2 and [p.pair.id for p in plan.planned] == ["p1"]
    assert plan.prompt_tokens == sum(len(u.prompt_token_ids) for u in plan.units)
    batch = await judge.run(plan)
    error, label = batch.results
    assert isinstance(error, PairError) and error.id == "long" and error.index == 0
    assert "over the model's context of 1024" in error.error.message
    assert isinstance(label, Label) and label.id == "p1"
    assert batch.usage.pairs == 1


async def test_custom_constitution_object_and_aggregators(judge: Judge):
    spec = parse_constitution(
        {"id": "one", "principles": [{"id": "kind", "question": "Which response is kinder?"}]},
        "inline",
    )
    mean_logodds = (await judge.label([PAIR], spec)).labels[0]
    mean_prob = (await judge.label([PAIR], spec, LabelOptions(aggregator="mean_prob"))).labels[0]
    # With one principle both aggregators are σ-monotone in the same margin sign.
    assert (mean_logodds.margin > 0) == (mean_prob.margin > 0)
    assert mean_prob.aggregator == "mean_prob"
    assert mean_logodds.constitution.version == spec.version


async def test_plan_tokenizes_in_one_worker_thread(
    judge: Judge, tiny_engine: VllmEngine, monkeypatch: pytest.MonkeyPatch
):
    # A fast tokenizer must not be used from two threads at once, nor block the loop.
    threads: set[int] = set()
    encode = tiny_engine.tokenizer.encode

    def recording_encode(*args: Any, **kwargs: Any) -> list[int]:
        threads.add(threading.get_ident())
        return encode(*args, **kwargs)

    monkeypatch.setattr(tiny_engine.tokenizer, "encode", recording_encode)
    pairs = [PAIR.model_copy(update={"id": f"t{i}", "prompt": f"Question {i}?"}) for i in range(4)]
    plans = await asyncio.gather(*(judge.plan([p], "harmless") for p in pairs))
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert all(len(p.units) == 32 for p in plans)


async def test_closed_judge_refuses_to_plan(tiny_engine: VllmEngine, registry):
    judge = Judge(tiny_engine, registry)
    judge.close()
    with pytest.raises(RuntimeError):
        await judge.plan([PAIR], "harmless")


def _answer_ids(engine: VllmEngine) -> tuple[int, int]:
    return (
        engine.tokenizer.convert_tokens_to_ids("A"),
        engine.tokenizer.convert_tokens_to_ids("B"),
    )


async def test_a_unit_vllm_refuses_fails_alone(tiny_engine: VllmEngine):
    ids = tuple(tiny_engine.tokenizer.encode("Consider the following conversation."))
    long_prefix = ids * (tiny_engine.max_model_len // len(ids) + 1)  # over the context
    answers = _answer_ids(tiny_engine)
    units = [
        ScoreUnit((*ids, 10), answers, len(ids)),  # a good prefix group...
        ScoreUnit((*long_prefix, 10), answers, len(long_prefix)),  # a refused leader...
        ScoreUnit((*ids, 11), answers, len(ids)),
        ScoreUnit((*long_prefix, 11), answers, len(long_prefix)),  # ...and its follower
        ScoreUnit((*ids, 12), answers, 0),  # no shared prefix
    ]
    with pytest.raises(ScoreUnitsFailed) as caught:
        await tiny_engine.score(units)
    failed = caught.value
    assert failed.failed_indices == [1, 3]
    # vLLM's own message, naming the limit.
    assert str(tiny_engine.max_model_len) in str(failed.results[1])
    assert failed.results[3] is failed.results[1]
    good = [failed.results[i] for i in (0, 2, 4)]
    assert all(isinstance(r, UnitScore) for r in good)
    alone = await tiny_engine.score([units[i] for i in (0, 2, 4)])
    for result, expected in zip(good, alone, strict=True):
        assert isinstance(result, UnitScore)
        assert result.logprob_a == pytest.approx(expected.logprob_a, abs=1e-4)
        assert result.logprob_b == pytest.approx(expected.logprob_b, abs=1e-4)
    # With nothing to salvage the caller gets the error itself.
    with pytest.raises(Exception, match=str(tiny_engine.max_model_len)) as alone_error:
        await tiny_engine.score([units[1]])
    assert not isinstance(alone_error.value, ScoreUnitsFailed)


class _ClaimsLongerContext:
    """The real engine, claiming more context than it has.

    The Judge's own context check then lets a long pair through, and vLLM refuses that
    pair's units one by one: the per-request failure a real engine produces.
    """

    def __init__(self, engine: VllmEngine, max_model_len: int) -> None:
        self.inner = engine
        self.model_name = engine.model_name
        self.max_model_len = max_model_len

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    async def score(self, units: Sequence[ScoreUnit]) -> list[UnitScore]:
        return await self.inner.score(units)

    async def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        return await self.inner.generate(prompts, params)

    async def check_health(self) -> None:
        await self.inner.check_health()

    async def shutdown(self) -> None:
        pass


async def test_pair_the_engine_refuses_is_reported_and_the_rest_labeled(
    tiny_engine: VllmEngine, registry: ConstitutionRegistry
):
    judge = Judge(_ClaimsLongerContext(tiny_engine, 16 * tiny_engine.max_model_len), registry)
    try:
        too_long = Pair(id="long", prompt="hi", response_a="word " * 1500, response_b="short")
        other = PAIR.model_copy(update={"id": "p2", "response_b": "Try list.sort()."})
        options = LabelOptions(principles=2)
        plan = await judge.plan([PAIR, too_long, other], "harmless", options)
        assert plan.errors == []  # the Judge's own check let it through
        assert max(len(u.prompt_token_ids) for u in plan.units) > tiny_engine.max_model_len
        batch = await judge.run(plan)
    finally:
        judge.close()
    first, error, last = batch.results
    assert isinstance(error, PairError) and (error.id, error.index) == ("long", 1)
    assert str(tiny_engine.max_model_len) in error.error.message
    assert isinstance(first, Label) and first.id == "p1"
    assert isinstance(last, Label) and last.id == "p2"
    assert batch.usage.pairs == 2 and batch.usage.score_units == 8
