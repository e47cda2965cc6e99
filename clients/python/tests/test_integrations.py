"""The trainer adapters' own logic: grouping, total timeout, fallback, counted errors.

The rewards API here is an in-test object, not the service: these tests check what the
adapters do around the call (which groups they form, what they do when the call fails or
is slow), which no server can be made to produce on demand. The same adapters run against
a live server, inside the real trainers, in tests/test_rewards_trainers.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from cai_judge_client.integrations._core import make_sync
from cai_judge_client.integrations.openrlhf import make_reward_func
from cai_judge_client.integrations.slime import make_group_rm
from cai_judge_client.integrations.trl import (
    group_reward_func,
    group_slices,
    reference_reward_func,
)
from cai_judge_client.integrations.verl import make_compute_score
from cai_judge_client.reward_types import RewardsResponse


class RecordingRewards:
    """Answers like `/v1/rewards`: a completion's reward is its length / 100; a group or item
    whose id is in `fail` gets an error in its place; every call waits `delay` seconds."""

    def __init__(self, fail: Sequence[str] = (), delay: float = 0.0) -> None:
        self.calls: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
        self.fail = set(fail)
        self.delay = delay

    def _error(self, index: int, entry: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": entry["id"],
            "index": index,
            "error": {"type": "invalid_request", "message": "refused", "param": f"x.{index}"},
        }

    async def group(self, groups: Sequence[Mapping[str, Any]], **options: Any) -> RewardsResponse:
        self.calls.append(("group", [dict(g) for g in groups], options))
        await asyncio.sleep(self.delay)
        results = [
            self._error(i, g)
            if g["id"] in self.fail
            else {"id": g["id"], "rewards": [len(c) / 100 for c in g["completions"]]}
            for i, g in enumerate(groups)
        ]
        return RewardsResponse.parse({"results": results, "usage": {}})

    async def reference(
        self, items: Sequence[Mapping[str, Any]], **options: Any
    ) -> RewardsResponse:
        self.calls.append(("reference", [dict(i) for i in items], options))
        await asyncio.sleep(self.delay)
        results = [
            self._error(i, item)
            if item["id"] in self.fail
            else {"id": item["id"], "reward": len(item["completion"]) / 100}
            for i, item in enumerate(items)
        ]
        return RewardsResponse.parse({"results": results, "usage": {}})

    async def openrlhf(
        self, query: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **options: Any
    ) -> dict[str, Any]:
        self.calls.append(("openrlhf", [{"query": list(query)}], options))
        await asyncio.sleep(self.delay)
        raise RuntimeError("server said no")


def test_groups_follow_num_generations_in_order_not_equal_prompts() -> None:
    # Two dataset rows with the same prompt are two groups of G, not one of 2G.
    assert group_slices(["p"] * 8, 4) == [range(0, 4), range(4, 8)]
    # A group split across processes: this process holds its tail (2) and a whole one (4).
    assert group_slices(["a", "a", "b", "b", "b", "b"], 4) == [range(0, 2), range(2, 6)]
    assert group_slices([], 4) == []


async def test_group_reward_judges_groups_of_num_generations() -> None:
    api = RecordingRewards()
    reward = group_reward_func(api, num_generations=2, constitution="harmless", principles=2)
    prompts = ["p", "p", "p", "p"]
    completions = ["a", "bb", "", [{"role": "assistant", "content": "dddd"}]]
    rewards = await reward(prompts=prompts, completions=completions, completion_ids=None)
    assert rewards == [0.01, 0.02, 0.0, 0.04]
    [(mode, groups, options)] = api.calls
    assert mode == "group"
    assert [g["completions"] for g in groups] == [["a", "bb"], ["", "dddd"]]
    assert options == {
        "constitution": "harmless",
        "principles": 2,
        "seed": 0,
        "opponents": "all",
        "scoring": "mean",
    }
    assert reward.stats.fallbacks == 0  # type: ignore[attr-defined]


async def test_a_refused_group_falls_back_logged_counted_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = RecordingRewards(fail=["1"])
    reward = group_reward_func(api, num_generations=2, constitution="harmless")
    metrics: dict[str, float] = {}
    with caplog.at_level(logging.WARNING, logger="cai_judge_client.integrations"):
        rewards = await reward(
            prompts=["p", "p", "q", "q"],
            completions=["a", "bb", "ccc", "dddd"],
            log_metric=metrics.__setitem__,
        )
    assert rewards == [0.01, 0.02, 0.5, 0.5]
    stats = reward.stats  # type: ignore[attr-defined]
    assert (stats.errors, stats.fallbacks, stats.completions) == (1, 2, 4)
    assert "invalid_request: refused (x.1)" in stats.last_errors[0]
    assert "group 1" in caplog.text and "refused" in caplog.text
    assert metrics == {"cai_judge/fallback_fraction": 0.5, "cai_judge/errors": 1.0}


def test_the_sync_wrapper_exposes_the_same_counts() -> None:
    api = RecordingRewards(fail=["0"])
    reward = group_reward_func(api, num_generations=2, constitution="harmless")
    sync = make_sync(reward)
    assert sync(prompts=["p", "p"], completions=["a", "b"]) == [0.5, 0.5]
    assert sync.stats is reward.stats  # type: ignore[attr-defined]
    assert sync.stats.errors == 1  # type: ignore[attr-defined]


async def test_a_slow_judge_is_cut_at_the_total_timeout() -> None:
    api = RecordingRewards(delay=5.0)
    reward = group_reward_func(api, num_generations=2, constitution="harmless", timeout=0.2)
    started = asyncio.get_running_loop().time()
    rewards = await reward(prompts=["p"] * 4, completions=["a", "b", "c", "d"])
    assert asyncio.get_running_loop().time() - started < 2.0
    assert rewards == [0.5] * 4
    stats = reward.stats  # type: ignore[attr-defined]
    assert (stats.timeouts, stats.fallbacks, stats.errors) == (1, 4, 2)


async def test_a_completion_alone_in_its_group_falls_back_counted() -> None:
    api = RecordingRewards()
    reward = group_reward_func(api, num_generations=2, constitution="harmless")
    rewards = await reward(prompts=["a", "b", "b"], completions=["x", "yy", "zzz"])
    assert rewards == [0.5, 0.02, 0.03]
    assert reward.stats.fallbacks == 1  # type: ignore[attr-defined]


async def test_reference_reward_reads_the_named_column() -> None:
    api = RecordingRewards()
    reward = reference_reward_func(api, reference_column="chosen", constitution="harmless")
    rewards = await reward(
        prompts=["p", "q"], completions=["aa", "b"], chosen=["ref p", "ref q"], trainer_state=None
    )
    assert rewards == [0.02, 0.01]
    [(mode, items, _)] = api.calls
    assert mode == "reference"
    assert [(i["prompt"], i["completion"], i["reference"]) for i in items] == [
        ("p", "aa", "ref p"),
        ("q", "b", "ref q"),
    ]
    with pytest.raises(ValueError, match="'answer' is not a column"):
        await reference_reward_func(api, reference_column="answer", constitution="h")(
            prompts=["p"], completions=["a"], chosen=["r"]
        )


async def test_verl_compute_score_takes_the_prompt_from_extra_info() -> None:
    api = RecordingRewards()
    compute_score = make_compute_score(api, constitution="harmless")
    score = await compute_score(
        data_source="gsm8k", solution_str="abc", ground_truth="42", extra_info={"question": "q"}
    )
    assert score == {"score": 0.03, "cai_judge_fallback": 0.0}
    assert api.calls[0][1][0]["prompt"] == "q"
    with pytest.raises(ValueError, match="extra_info has no 'question'"):
        await compute_score(data_source="x", solution_str="a", ground_truth="b", extra_info={})
    failing = make_compute_score(RecordingRewards(fail=["0"]), constitution="harmless")
    assert await failing(solution_str="a", ground_truth="b", extra_info={"question": "q"}) == {
        "score": 0.5,
        "cai_judge_fallback": 1.0,
    }


async def test_slime_group_rm_judges_the_whole_group() -> None:
    api = RecordingRewards()
    group_rm = make_group_rm(api, constitution="harmless", opponents=2)
    samples = [SimpleNamespace(prompt="p", response="x" * n, label=None) for n in (1, 2, 3)]
    assert await group_rm(SimpleNamespace(), samples) == [0.01, 0.02, 0.03]
    assert api.calls[0][2]["opponents"] == 2


def test_openrlhf_reward_func_falls_back_in_its_shape() -> None:
    reward_func = make_reward_func(RecordingRewards(), constitution="harmless")
    answer = reward_func(["q1"], ["p1"], ["l1"])
    assert answer == {
        "rewards": [0.5],
        "scores": [0.5],
        "extra_logs": {"cai_judge_fallback": 1.0},
    }
    assert reward_func.stats.errors == 1  # type: ignore[attr-defined]
    assert "server said no" in reward_func.stats.last_errors[0]  # type: ignore[attr-defined]
