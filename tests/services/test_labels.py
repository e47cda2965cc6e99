"""LabelService (services/labels.py) on its built object, on the fake engine: what a
labeling request is refused for, with the field and the limit named, in the order of cost;
a batch with bad pairs labels the rest; the queue reservation is given back whatever ends a
request. No HTTP: tests/api/ has the wire mapping of the same errors."""

from __future__ import annotations

import pytest

from cai_judge.labeling.schema import Label, PairError
from cai_judge.services.errors import InvalidRequest, NotFound, RateLimited
from cai_judge.services.labels import LabelCommand
from tests.support.api import pair
from tests.support.fake_engine import FakeEngine
from tests.support.services import USER, built, options


async def test_a_bad_pair_is_reported_in_its_place_and_the_rest_labeled(
    fake_engine: FakeEngine,
) -> None:
    pairs = [pair(0), {**pair(1), "response_b": ""}, pair(2)]
    async with built(fake_engine) as services:
        outcome = await services.labels.label(LabelCommand(options(), pairs), USER)
    first, bad, third = outcome.results
    assert isinstance(first, Label) and isinstance(third, Label)
    assert (first.id, third.id) == ("p0", "p2")
    assert isinstance(bad, PairError)
    assert (bad.index, bad.error.param) == (1, "pairs.1.response_b")
    # Two pairs × 2 principles × 2 orders; the bad pair cost nothing.
    assert (outcome.usage.pairs, outcome.usage.score_units) == (2, 8)
    assert sum(len(call) for call in fake_engine.calls) == 8


async def test_too_many_pairs_names_the_field_and_the_limit(fake_engine: FakeEngine) -> None:
    async with built(fake_engine, max_pairs_per_request=2) as services:
        command = LabelCommand(options(), [pair(i) for i in range(3)])
        with pytest.raises(InvalidRequest) as refused:
            await services.labels.label(command, USER)
    assert (refused.value.type, refused.value.param) == ("too_many_pairs", "pairs")
    assert "3 pairs, over the limit of 2 per request" in str(refused.value)
    assert fake_engine.calls == []  # refused before rendering


async def test_an_unknown_constitution_is_not_found_naming_the_field(
    fake_engine: FakeEngine,
) -> None:
    async with built(fake_engine) as services:
        command = LabelCommand(options(constitution="no-such-one"), [pair(0)])
        with pytest.raises(NotFound) as missing:
            await services.labels.label(command, USER)
    assert missing.value.param == "constitution" and "no-such-one" in str(missing.value)


async def test_a_cot_budget_over_the_servers_limit_names_both_numbers(
    fake_engine: FakeEngine,
) -> None:
    async with built(fake_engine, max_cot_tokens=8) as services:
        command = LabelCommand(options(mode="cot", cot_max_tokens=16), [pair(0)])
        with pytest.raises(InvalidRequest) as refused:
            await services.labels.label(command, USER)
    assert (refused.value.type, refused.value.param) == ("cot_tokens_over_limit", "cot_max_tokens")
    assert "cot_max_tokens is 16" in str(refused.value) and "limit of 8" in str(refused.value)


async def test_calibrated_labels_without_profiles_are_refused_before_the_engine(
    fake_engine: FakeEngine,
) -> None:
    async with built(fake_engine) as services:
        command = LabelCommand(options(calibrated=True), [pair(0)])
        with pytest.raises(InvalidRequest) as refused:
            await services.labels.label(command, USER)
    assert (refused.value.type, refused.value.param) == ("calibration_unavailable", "calibrated")
    assert "CAI_JUDGE_CALIBRATION_DIR" in str(refused.value)
    assert fake_engine.calls == []


async def test_a_request_over_the_token_budget_is_refused_and_reserves_nothing(
    fake_engine: FakeEngine,
) -> None:
    async with built(fake_engine, max_tokens_per_request=200) as services:
        command = LabelCommand(options(), [pair(i, words=40) for i in range(4)])
        with pytest.raises(InvalidRequest) as refused:
            await services.labels.label(command, USER)
        assert services.admission.queued_units == 0
        assert services.admission.active_requests == 0
    assert (refused.value.type, refused.value.param) == ("request_too_large", "pairs")
    assert "over the limit of 200 tokens per request" in str(refused.value)
    assert fake_engine.calls == []


async def test_the_rate_limit_counts_calls_per_caller(fake_engine: FakeEngine) -> None:
    async with built(fake_engine, rate_limit="2/minute") as services:
        command = LabelCommand(options(principles=1), [pair(0)])
        for _ in range(2):
            await services.labels.label(command, USER)
        with pytest.raises(RateLimited) as limited:
            await services.labels.label(command, USER)
        assert limited.value.retry_after_s is not None and limited.value.retry_after_s > 0
        # Work admitted elsewhere (a job's chunk) is not the caller's call again.
        outcome = await services.labels.label_admitted(command)
    assert outcome.usage.pairs == 1
