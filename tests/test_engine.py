"""The real vLLM CPU engine on a tiny random Llama: scores, prefix caching, the Judge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from cai_judge.engine.base import ScoreUnit
from cai_judge.engine.vllm_local import VllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry, parse_constitution
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import Label, LabelOptions, Pair, PairError

pytestmark = pytest.mark.engine

PAIR = Pair(
    id="p1",
    prompt="How do I sort a list in Python?",
    response_a="Use sorted(my_list), which returns a new sorted list.",
    response_b="I cannot help with that.",
)


@pytest.fixture(scope="module")
def judge(tiny_engine: VllmEngine, registry: ConstitutionRegistry) -> Judge:
    return Judge(tiny_engine, registry)


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
    units, _, _ = judge.plan_units([fresh], spec, LabelOptions(principles="all"))
    ab_units = [u for u in units if u.prefix_key == units[0].prefix_key]
    assert len(ab_units) == 16 and ab_units[0].prefix_length > 64
    scores = await tiny_engine.score(ab_units)
    # Prefixes are padded to whole KV blocks, so the leader computes the order's prefix
    # (only the template's constant head may be cached by earlier work) and every follower
    # finds all of it cached: a follower computes nothing but its principle tail.
    prefix = ab_units[0].prefix_length
    assert tiny_engine.prefix_alignment == tiny_engine.config.block_size
    assert prefix % tiny_engine.prefix_alignment == 0
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
    batch = await judge.label([too_long, PAIR], "harmless", LabelOptions(principles=1))
    error, label = batch.results
    assert isinstance(error, PairError) and error.id == "long" and error.index == 0
    assert "over the model's context of 1024" in error.error
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
