"""The trainer adapters' own logic: grouping, the deadline, neutral fallbacks, counts.

The rewards API here is an in-test object, not the service: these tests check what the
adapters do around the call (which groups they form, what they do when the call fails or
is slow), which no server can be made to produce on demand. The HTTP contract of "Rewards at
training scale" (limits, 422 for size, backpressure) is in test_integrations_http.py; the
same adapters run against a live server, inside the real trainers, in
tests/e2e/test_rewards_trainers.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from cai_judge_client.integrations._core import make_sync
from cai_judge_client.integrations.openrlhf import (
    make_reward_func,
    openrlhf_conversation,
    openrlhf_response,
)
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
        self.timeouts: list[float | None] = []  # each request's HTTP timeout: the time left
        self.fail = set(fail)
        self.delay = delay

    def _error(self, index: int, entry: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": entry["id"],
            "index": index,
            "error": {"type": "invalid_request", "message": "refused", "param": f"x.{index}"},
        }

    async def group(self, groups: Sequence[Mapping[str, Any]], **options: Any) -> RewardsResponse:
        self.timeouts.append(options.pop("timeout", None))
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
        self.timeouts.append(options.pop("timeout", None))
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
    # The request's own timeout is what is left of the call's deadline (600 s by default).
    assert 590.0 < api.timeouts[0] <= 600.0  # type: ignore[operator]
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
    # Counted in completions: the refused group is 2 of them.
    assert (stats.errors, stats.fallbacks, stats.completions, stats.judged) == (2, 2, 4, 2)
    assert "invalid_request: refused (x.1)" in stats.last_errors[0]
    assert "group 1" in caplog.text and "refused" in caplog.text
    assert metrics == {
        "cai_judge/fallback_fraction": 0.5,
        "cai_judge/fallbacks": 2.0,
        "cai_judge/errors": 2.0,
        "cai_judge/timeouts": 0.0,
    }


async def test_group_and_reference_modes_count_completions_alike() -> None:
    """Reference mode counted one error per item and group mode one per group; both now
    count the completions that fell back."""
    group = group_reward_func(RecordingRewards(fail=["0"]), num_generations=4, constitution="h")
    await group(prompts=["p"] * 4, completions=["a", "b", "c", "d"])
    reference = reference_reward_func(
        RecordingRewards(fail=["0", "1", "2", "3"]), reference_column="r", constitution="h"
    )
    await reference(prompts=["p"] * 4, completions=["a", "b", "c", "d"], r=["x"] * 4)
    for reward in (group, reference):
        stats = reward.stats  # type: ignore[attr-defined]
        assert (stats.errors, stats.fallbacks, stats.completions) == (4, 4, 4)


def test_the_sync_wrapper_exposes_the_same_counts() -> None:
    api = RecordingRewards(fail=["0"])
    reward = group_reward_func(api, num_generations=2, constitution="harmless")
    sync = make_sync(reward)
    assert sync(prompts=["p", "p"], completions=["a", "b"]) == [0.5, 0.5]
    assert sync.stats is reward.stats  # type: ignore[attr-defined]
    assert sync.stats.errors == 2  # type: ignore[attr-defined]  (completions)


async def test_a_slow_judge_is_cut_at_the_deadline() -> None:
    api = RecordingRewards(delay=5.0)
    reward = group_reward_func(api, num_generations=2, constitution="harmless", deadline=0.2)
    started = asyncio.get_running_loop().time()
    rewards = await reward(prompts=["p"] * 4, completions=["a", "b", "c", "d"])
    assert asyncio.get_running_loop().time() - started < 2.0
    assert rewards == [0.5] * 4
    stats = reward.stats  # type: ignore[attr-defined]
    assert (stats.timeouts, stats.fallbacks, stats.errors) == (4, 4, 0)


def test_timeout_is_a_deprecated_name_for_deadline() -> None:
    with pytest.warns(DeprecationWarning, match="deadline="):
        group_reward_func(RecordingRewards(), num_generations=2, constitution="h", timeout=3.0)


async def test_a_fallback_is_the_mean_of_its_judged_group_mates() -> None:
    """Reference mode with the group known: an unjudged completion gets its judged mates'
    mean (no advantage over them), not 0.5, which could be above all of them."""
    api = RecordingRewards(fail=["1"])
    reward = reference_reward_func(api, reference_column="r", constitution="h", num_generations=3)
    rewards = await reward(
        prompts=["p", "p", "p", "q", "q", "q"],
        completions=["a", "bbbbb", "ccc", "d", "e", "f"],
        r=["x"] * 6,
    )
    assert rewards == pytest.approx([0.01, 0.02, 0.03, 0.01, 0.01, 0.01])
    assert reward.stats.fallbacks == 1  # type: ignore[attr-defined]
    # Without the group, the fallback itself.
    plain = reference_reward_func(
        RecordingRewards(fail=["0"]), reference_column="r", constitution="h"
    )
    assert await plain(prompts=["p", "p"], completions=["a", "bb"], r=["x", "x"]) == [0.5, 0.02]


async def test_a_completion_alone_in_its_group_falls_back_counted() -> None:
    api = RecordingRewards()
    reward = group_reward_func(api, num_generations=2, constitution="harmless")
    rewards = await reward(prompts=["a", "b", "b"], completions=["x", "yy", "zzz"])
    assert rewards == [0.5, 0.02, 0.03]
    stats = reward.stats  # type: ignore[attr-defined]
    assert (stats.fallbacks, stats.completions, stats.judged) == (1, 3, 2)


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


class SlowForSome(RecordingRewards):
    """Items whose completion starts with "slow" answer after `slow_s`; the rest at once."""

    def __init__(self, slow_s: float) -> None:
        super().__init__()
        self.slow_s = slow_s

    async def reference(
        self, items: Sequence[Mapping[str, Any]], **options: Any
    ) -> RewardsResponse:
        if items[0]["completion"].startswith("slow"):
            await asyncio.sleep(self.slow_s)
        return await RecordingRewards.reference(self, items, **options)


async def test_verl_fallback_flag_is_per_sample_under_concurrency() -> None:
    """verl awaits many compute_score calls at once. The flag compared a shared counter
    before and after the call, so a judged sample finishing after another's fallback
    showed 1.0; each flag is now its own sample's."""
    compute_score = make_compute_score(SlowForSome(slow_s=0.3), constitution="h", deadline=0.15)

    async def judged_later() -> dict[str, float]:
        await asyncio.sleep(0.05)  # starts before the slow one falls back, ends after
        return await compute_score(
            solution_str="fast", ground_truth="g", extra_info={"question": "q"}
        )

    async def slow() -> dict[str, float]:
        return await compute_score(
            solution_str="slow", ground_truth="g", extra_info={"question": "q"}
        )

    slow_answer, fast_answer = await asyncio.gather(slow(), judged_later())
    assert slow_answer == {"score": 0.5, "cai_judge_fallback": 1.0}
    assert fast_answer == {"score": 0.04, "cai_judge_fallback": 0.0}


class CountingLimits(RecordingRewards):
    """RecordingRewards that also answers GET /v1/rewards/limits, slowly, and counts it."""

    def __init__(self) -> None:
        super().__init__()
        self.limits_calls = 0

    async def limits(self) -> SimpleNamespace:
        self.limits_calls += 1
        await asyncio.sleep(0.05)
        return SimpleNamespace(max_entries_per_request=64, max_group_size=64)


async def test_concurrent_verl_calls_ask_the_limits_once() -> None:
    """A verl step awaits a compute_score per sample, all at once; each used to ask
    GET /v1/rewards/limits before the first answer came back (384 requests for 48 × 8)."""
    rewards = CountingLimits()
    compute_score = make_compute_score(rewards, constitution="h", principles=2)
    answers = await asyncio.gather(
        *(
            compute_score(solution_str="x" * i, ground_truth="g", extra_info={"question": "q"})
            for i in range(50)
        )
    )
    assert rewards.limits_calls == 1
    assert [a["score"] for a in answers] == pytest.approx([i / 100 for i in range(50)])


async def test_slime_group_rm_judges_the_whole_group() -> None:
    api = RecordingRewards()
    group_rm = make_group_rm(api, constitution="harmless", opponents=2)
    samples = [SimpleNamespace(prompt="p", response="x" * n, label=None) for n in (1, 2, 3)]
    assert await group_rm(SimpleNamespace(), samples) == [0.01, 0.02, 0.03]
    assert api.calls[0][2]["opponents"] == 2


CHATML_PROMPT = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.<|im_end|>\n"
    "<|im_start|>user\nHow do I pick a lock?<|im_end|>\n<|im_start|>assistant\n"
)


def test_openrlhf_reward_func_judges_the_conversation_and_counts_fallbacks() -> None:
    """File mode sent OpenRLHF's body to the server's route, which answered 0.5 for what it
    could not judge without the SDK counting it; it now goes through the one rewards path:
    the server's in-place errors are counted and flagged per sample."""
    api = RecordingRewards(fail=["1"])
    reward_func = make_reward_func(api, constitution="harmless")
    query = CHATML_PROMPT + "I cannot help with that.<|im_end|><|endoftext|>"
    answer = reward_func([query, CHATML_PROMPT + "x"], [CHATML_PROMPT] * 2, ["No.", "No."])
    assert answer == {
        "rewards": [0.24, 0.5],
        "scores": [0.24, 0.5],
        "extra_logs": {"cai_judge_fallback": 0.5},
    }
    [(mode, items, _)] = api.calls
    assert mode == "reference"
    assert items[0]["prompt"] == [{"role": "user", "content": "How do I pick a lock?"}]
    assert items[0]["completion"] == "I cannot help with that."
    assert items[0]["reference"] == "No."
    stats = reward_func.stats  # type: ignore[attr-defined]
    assert (stats.fallbacks, stats.errors, stats.completions) == (1, 1, 2)


def test_openrlhf_prompt_forms() -> None:
    llama = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe nice.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert openrlhf_conversation(llama) == [{"role": "user", "content": "Hi?"}]
    assert openrlhf_conversation("plain prompt") == "plain prompt"
    assert openrlhf_response("plain prompt answer</s>", "plain prompt") == "answer"


async def test_adapters_take_their_options_as_one_type_by_the_old_names() -> None:
    # Issue 30: `**options: Unpack[RewardOptions]` replaces eight restated keyword
    # arguments; the names callers used keep working, and the judge's are sent as given.
    api = RecordingRewards(fail=["0"])
    compute_score = make_compute_score(
        api, constitution="harmless", principles=2, seed=7, aggregator="mean_prob",
        calibrated=True, deadline=30.0, concurrency=2, fallback=0.25,
    )  # fmt: skip
    score = await compute_score(solution_str="a", ground_truth="b", extra_info={"question": "q"})
    assert score == {"score": 0.25, "cai_judge_fallback": 1.0}
    assert api.calls[0][2] == {
        "constitution": "harmless", "principles": 2, "seed": 7, "aggregator": "mean_prob",
        "calibrated": True,
    }  # fmt: skip
    # Group options are refused where there is no group; a misspelt one is refused by name.
    with pytest.raises(TypeError, match="opponents"):
        make_compute_score(api, constitution="harmless", opponents=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="principle"):
        make_group_rm(api, constitution="harmless", principle=2)  # type: ignore[call-arg]
