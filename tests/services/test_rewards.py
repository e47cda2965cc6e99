"""RewardService (services/rewards.py) on its built object, on the fake engine: one result
per group or item in input order, each the shape its mode promises; a bad entry reported in
its place while the rest are judged; and the shape bounds (DESIGN.md §9) refusing, before
any text is rendered, an entry too large on its own (in its place, naming the opponents
that would fit) or a request too large in total (whole, naming the field and the limits)."""

from __future__ import annotations

from typing import Any

import pytest

from cai_judge.labeling.reward_schema import GroupRewards, ItemReward
from cai_judge.labeling.schema import PairError
from cai_judge.services.errors import InvalidRequest
from cai_judge.services.rewards import RewardCommand
from tests.support.fake_engine import FakeEngine
from tests.support.services import USER, built, options


def group(i: int, size: int) -> dict[str, Any]:
    return {
        "id": f"g{i}",
        "prompt": f"Question {i}: how do I calm down?",
        "completions": [f"Answer {j}: breathe {'slowly ' * j}" for j in range(size)],
    }


async def test_each_group_gets_one_reward_a_completion_and_a_bad_group_its_error(
    fake_engine: FakeEngine,
) -> None:
    entries = [group(0, 4), {**group(1, 2), "completions": ["alone"]}, group(2, 3)]
    async with built(fake_engine) as services:
        outcome = await services.rewards.rewards(
            RewardCommand(options(principles=1), "group", entries), USER
        )
    first, bad, third = outcome.results
    assert isinstance(first, GroupRewards) and isinstance(third, GroupRewards)
    assert (first.id, len(first.rewards), third.id, len(third.rewards)) == ("g0", 4, "g2", 3)
    # Round robin, mean scoring: win probabilities of a pair add to 1, so a group of G has
    # rewards in [0, 1] summing to G/2.
    for result, size in ((first, 4), (third, 3)):
        assert all(0.0 <= r <= 1.0 for r in result.rewards)
        assert sum(result.rewards) == pytest.approx(size / 2, abs=1e-6)
    assert isinstance(bad, PairError) and bad.index == 1
    assert bad.error.param is not None and bad.error.param.startswith("groups.1")
    # 6 + 3 matches, 1 principle, 2 orders; the bad group cost nothing.
    assert outcome.usage.score_units == (6 + 3) * 2
    assert outcome.errors == [bad]


async def test_reference_mode_gives_one_reward_an_item(fake_engine: FakeEngine) -> None:
    items = [
        {"id": f"i{i}", "prompt": "Hi?", "completion": f"Hello {i}.", "reference": "Go away."}
        for i in range(3)
    ]
    async with built(fake_engine) as services:
        outcome = await services.rewards.rewards(
            RewardCommand(options(principles=1), "reference", items), USER
        )
    assert [r.id for r in outcome.results] == ["i0", "i1", "i2"]
    assert all(isinstance(r, ItemReward) and 0.0 <= r.reward <= 1.0 for r in outcome.results)
    assert outcome.usage.score_units == 3 * 2


async def test_a_group_too_large_alone_is_refused_in_its_place_naming_what_fits(
    fake_engine: FakeEngine,
) -> None:
    # 8 completions round robin: 28 pairs × 2 principles × 2 orders = 112 units, over 64.
    async with built(fake_engine, max_score_units_per_request=64) as services:
        command = RewardCommand(options(), "group", [group(0, 8), group(1, 3)])
        outcome = await services.rewards.rewards(command, USER)
        big, small = outcome.results
        assert isinstance(small, GroupRewards) and len(small.rewards) == 3
        assert isinstance(big, PairError) and big.error.type == "request_too_large"
        assert big.error.param == "groups.0.completions"
        assert "limit of 64 score units" in big.error.message
        assert "send opponents: 4 or fewer" in big.error.message  # 8·4/2 = 16 pairs, 64 units
        # Alone, nothing else to judge: the request itself is refused, naming the entry.
        with pytest.raises(InvalidRequest) as alone:
            await services.rewards.rewards(RewardCommand(options(), "group", [group(0, 8)]), USER)
        assert alone.value.param == "groups.0.completions"
    assert sum(len(call) for call in fake_engine.calls) == 3 * 2 * 2  # only the small group


async def test_a_request_too_large_in_total_is_refused_whole_before_rendering(
    fake_engine: FakeEngine,
) -> None:
    # Each group fits (6 pairs, 24 units) but five make 120 units, over 100.
    async with built(fake_engine, max_score_units_per_request=100) as services:
        command = RewardCommand(options(), "group", [group(i, 4) for i in range(5)])
        with pytest.raises(InvalidRequest) as refused:
            await services.rewards.rewards(command, USER)
        assert services.admission.queued_units == 0
    assert (refused.value.type, refused.value.param) == ("request_too_large", "groups")
    assert "5 groups make 30 pairs and 120 score units" in str(refused.value)
    assert "limit of 100 score units" in str(refused.value)
    assert fake_engine.calls == []


async def test_too_many_groups_names_the_field_and_the_limit(fake_engine: FakeEngine) -> None:
    async with built(fake_engine, max_pairs_per_request=2) as services:
        command = RewardCommand(options(), "group", [group(i, 2) for i in range(3)])
        with pytest.raises(InvalidRequest) as refused:
            await services.rewards.rewards(command, USER)
    assert (refused.value.type, refused.value.param) == ("too_many_groups", "groups")
    assert "3 groups, over the limit of 2 per request" in str(refused.value)
