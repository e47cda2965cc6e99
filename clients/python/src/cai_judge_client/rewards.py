"""Online rewards for RL: groupwise relative judging under a constitution.

`groupwise_reward(...)` returns an async `reward_func(prompts, completions, **kwargs) ->
list[float]` for TRL's `GRPOTrainer` (which runs async reward functions on its own event
loop) and any trainer with that signature (`make_sync` wraps it for trainers that call it
synchronously).

GRPO samples a group of completions per prompt and only needs rewards that rank a group's
members against each other, so each completion is judged pairwise against the other
completions of its group, and its reward is its mean win probability over them (groupwise
relative judging, TRL #4707): for a group of G, G·(G−1)/2 pairs, each label's `p_a` counting
as a's win probability and `1 − p_a` as b's (the label is already debiased over both orders,
docs/DESIGN.md §2). All pairs of a group share their prompt, so they also share the judge's
prefix cache.

A slow or failing judge never hangs training (OpenRLHF #1123): the whole call is bounded by
`timeout`, and a group whose judging failed or did not finish in time gets `fallback` for
every completion (the default 0.5, a tie everywhere, gives that group zero advantage, so it
neither helps nor harms the update). A pair the judge refuses counts as a tie.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from cai_judge_client._client import AsyncCaiJudge
from cai_judge_client.types import Aggregator, PairError

__all__ = ["AsyncRewardFunc", "groupwise_reward", "make_sync"]

logger = logging.getLogger("cai_judge_client.rewards")

AsyncRewardFunc = Callable[..., Coroutine[Any, Any, list[float]]]


def _text(completion: Any) -> str:
    """A completion as text: TRL passes strings, or chat messages for conversational data."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return str(completion)


def _judge_prompt(prompt: Any) -> str | list[dict[str, str]]:
    if isinstance(prompt, str):
        return prompt
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def _groups(prompts: Sequence[Any]) -> list[list[int]]:
    """Indices of completions sharing a prompt, in order of first appearance."""
    by_prompt: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
        by_prompt.setdefault(key, []).append(index)
    return list(by_prompt.values())


def groupwise_reward(
    client: AsyncCaiJudge | None = None,
    *,
    constitution: str,
    principles: int | str = "all",
    seed: int = 0,
    aggregator: Aggregator = "mean_logodds",
    concurrency: int = 8,
    timeout: float = 120.0,
    fallback: float = 0.5,
    pairs_per_request: int = 64,
    name: str | None = None,
) -> AsyncRewardFunc:
    """An async GRPO reward: each completion's mean win probability within its group.

    Completions are grouped by identical prompt (GRPO's repeated prompts). `concurrency`
    bounds the label requests in flight; `timeout` bounds the whole call, in seconds;
    `fallback` is the reward of every completion in a group that could not be judged, and of
    a completion alone in its group. Without `client`, one `AsyncCaiJudge()` per event loop
    is made from `CAI_JUDGE_BASE_URL` and `CAI_JUDGE_API_KEY`.
    """
    if concurrency < 1 or pairs_per_request < 1 or timeout <= 0:
        raise ValueError("concurrency and pairs_per_request must be >= 1 and timeout > 0")
    clients: dict[int, tuple[asyncio.AbstractEventLoop, AsyncCaiJudge]] = {}

    def judge() -> AsyncCaiJudge:
        if client is not None:
            return client
        # An httpx.AsyncClient belongs to the loop it first ran on; a trainer that calls
        # through asyncio.run() each step gets a fresh loop, and so a fresh client.
        loop = asyncio.get_running_loop()
        held = clients.get(id(loop))
        if held is None or held[0] is not loop:
            clients.clear()
            held = (loop, AsyncCaiJudge())
            clients[id(loop)] = held
        return held[1]

    async def judge_group(
        api: AsyncCaiJudge, semaphore: asyncio.Semaphore, prompt: Any, texts: list[str]
    ) -> list[float]:
        size = len(texts)
        if size < 2:
            return [fallback] * size
        judged_prompt = _judge_prompt(prompt)
        pairs = [
            {
                "id": f"{a}-{b}",
                "prompt": judged_prompt,
                "response_a": texts[a],
                "response_b": texts[b],
            }
            for a in range(size)
            for b in range(a + 1, size)
        ]
        wins = [0.0] * size

        async def label(batch: list[dict[str, Any]]) -> None:
            async with semaphore:
                answer = await api.label(
                    batch, constitution=constitution, principles=principles, seed=seed,
                    aggregator=aggregator,
                )  # fmt: skip
            for pair, result in zip(batch, answer.labels, strict=True):
                a, b = (int(x) for x in pair["id"].split("-"))
                p_a = 0.5 if isinstance(result, PairError) else result.p_a
                wins[a] += p_a
                wins[b] += 1.0 - p_a

        await asyncio.gather(
            *(
                label(pairs[i : i + pairs_per_request])
                for i in range(0, len(pairs), pairs_per_request)
            )
        )
        return [w / (size - 1) for w in wins]

    async def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        api = judge()
        semaphore = asyncio.Semaphore(concurrency)
        groups = _groups(prompts)
        tasks = [
            asyncio.ensure_future(
                judge_group(api, semaphore, prompts[g[0]], [_text(completions[i]) for i in g])
            )
            for g in groups
        ]
        done, not_done = await asyncio.wait(tasks, timeout=timeout) if tasks else (set(), set())
        for task in not_done:
            task.cancel()
        if not_done:
            await asyncio.gather(*not_done, return_exceptions=True)
        rewards = [fallback] * len(completions)
        fell_back = 0
        for group, task in zip(groups, tasks, strict=True):
            if task in done and task.exception() is None:
                for index, value in zip(group, task.result(), strict=True):
                    rewards[index] = value
                continue
            fell_back += 1
            why = "timed out" if task in not_done else repr(task.exception())
            logger.warning("judge fell back to %s for a group of %d: %s", fallback, len(group), why)
        reward.fallback_groups += fell_back  # type: ignore[attr-defined]
        return rewards

    reward.__name__ = name or f"cai_judge_{constitution.split('@', 1)[0]}".replace("-", "_")
    reward.fallback_groups = 0  # type: ignore[attr-defined]
    return reward


def make_sync(reward: AsyncRewardFunc) -> Callable[..., list[float]]:
    """The same reward for trainers that call reward functions synchronously: runs it on a
    private event loop in a daemon thread (one loop, so one connection pool, for all calls)."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="cai-judge-reward", daemon=True).start()

    def sync_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        future = asyncio.run_coroutine_threadsafe(reward(prompts, completions, **kwargs), loop)
        return future.result()

    sync_reward.__name__ = getattr(reward, "__name__", "cai_judge_reward")
    return sync_reward
