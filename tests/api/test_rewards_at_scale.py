"""The SDK's TRL adapter against the real app at a real generation batch (DESIGN.md §9,
"Rewards at training scale").

The finding: `group_reward_func` with 12 prompts × 8 completions of 20 words gave 96 of 96
completions the 0.5 fallback. It put the 12 groups in one request with every principle of
`harmless` (16): 12 × 28 pairs × 16 × 2 orders = 10,752 score units, over the default queue
capacity (8,192), so the server refused the whole request (422) and the adapter never split
it. The app runs here in process with its default limits on the fake engine: what is under
test is how requests are sized and split, not the engine's scores. Whether the server has
`GET /v1/limits` or not, every completion must be judged.
"""

from __future__ import annotations

import pytest

import cai_judge_client as sdk
from cai_judge_client.integrations.trl import group_reward_func
from tests.support.api import Client

PROMPTS = 12
GENERATIONS = 8
WORDS = 20


def generation_batch() -> tuple[list[str], list[str]]:
    """As TRL hands it: each prompt `GENERATIONS` times, consecutively."""
    prompts = [
        f"Question {p}: how should I handle a disagreement with my neighbour?"
        for p in range(PROMPTS)
        for _ in range(GENERATIONS)
    ]
    completions = [
        " ".join(f"w{p}x{g}x{w}" for w in range(WORDS))
        for p in range(PROMPTS)
        for g in range(GENERATIONS)
    ]
    return prompts, completions


async def test_twelve_prompts_by_eight_completions_are_all_judged(client: Client) -> None:
    async with client() as http:
        judge = sdk.AsyncCaiJudge(base_url="http://test", http_client=http)
        reward = group_reward_func(
            judge, num_generations=GENERATIONS, constitution="harmless", principles="all"
        )
        prompts, completions = generation_batch()
        metrics: dict[str, float] = {}
        rewards = await reward(
            prompts=prompts, completions=completions, log_metric=metrics.__setitem__
        )
    stats = reward.stats  # type: ignore[attr-defined]
    assert stats.fallbacks == 0, stats.as_dict()  # was 96
    assert (stats.judged, stats.errors, stats.timeouts) == (96, 0, 0), stats.as_dict()
    assert metrics["cai_judge/fallback_fraction"] == 0.0
    # Round robin: each group's rewards average exactly 0.5.
    for start in range(0, len(rewards), GENERATIONS):
        group = rewards[start : start + GENERATIONS]
        assert sum(group) / GENERATIONS == pytest.approx(0.5, abs=1e-9)


async def test_a_group_that_can_never_fit_raises_with_the_servers_message(
    client: Client,
) -> None:
    """One group over the queue capacity alone cannot be split: a configuration error."""
    async with client(max_queued_units=500) as http:
        judge = sdk.AsyncCaiJudge(base_url="http://test", http_client=http)
        reward = group_reward_func(
            judge, num_generations=GENERATIONS, constitution="harmless", principles="all"
        )
        prompts, completions = generation_batch()
        with pytest.raises(sdk.CaiJudgeError, match="cannot be split") as raised:
            await reward(prompts=prompts[:GENERATIONS], completions=completions[:GENERATIONS])
    assert "500" in str(raised.value)


async def test_an_unknown_constitution_raises_never_a_reward(client: Client) -> None:
    async with client() as http:
        judge = sdk.AsyncCaiJudge(base_url="http://test", http_client=http)
        reward = group_reward_func(judge, num_generations=2, constitution="harmles", principles=2)
        with pytest.raises(sdk.CaiJudgeError, match="harmles"):
            await reward(prompts=["p", "p"], completions=["a", "b"])
    assert reward.stats.fallbacks == 0  # type: ignore[attr-defined]
