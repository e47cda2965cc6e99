"""verl: an async `compute_score` judged against the ground truth (docs/DESIGN.md §9).

verl 0.9.1's reward managers (`verl/experimental/reward_loop/reward_manager/naive.py`, and
`verl/workers/reward_manager/naive.py` for sync functions) call
`compute_score(data_source=, solution_str=, ground_truth=, extra_info=)` once per sample,
awaiting it when it is a coroutine function, and read a float or `{"score": float, ...}`
whose other keys become `reward_extra_info` columns. A call never holds a group or a prompt,
so this is reference mode: the response against `ground_truth`, with the prompt taken from
`extra_info[prompt_key]` (verl's data recipes, e.g. `examples/data_preprocess/gsm8k.py`, store
the question there; add it to `extra_info` in your preprocessing if they do not).

A failed or timed-out call scores `fallback`, is logged and counted
(`compute_score.stats`), and says so in its `cai_judge_fallback` key (always present, so every
sample has the same extra-info columns).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from cai_judge_client.integrations._core import RewardCaller, completion_text, judge_prompt

__all__ = ["make_compute_score"]


def make_compute_score(
    client: Any | None = None,
    *,
    constitution: str,
    principles: int | str = "all",
    seed: int = 0,
    aggregator: str | None = None,
    prompt_key: str = "question",
    timeout: float = 60.0,
    fallback: float = 0.5,
) -> Callable[..., Coroutine[Any, Any, dict[str, float]]]:
    """An async `compute_score` for verl's reward loop; in your reward file:

        from cai_judge_client.integrations.verl import make_compute_score
        compute_score = make_compute_score(constitution="harmless")

    and `custom_reward_function.path=that_file.py custom_reward_function.name=compute_score`.
    """
    caller = RewardCaller(
        client,
        {
            "constitution": constitution,
            "principles": principles,
            "seed": seed,
            "aggregator": aggregator,
        },
        timeout=timeout,
        fallback=fallback,
    )

    async def compute_score(
        data_source: Any = None,
        solution_str: str = "",
        ground_truth: Any = None,
        extra_info: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, float]:
        info = extra_info or {}
        if prompt_key not in info:
            raise ValueError(
                f"extra_info has no {prompt_key!r} (the prompt to judge against); it has "
                f"{sorted(info)}: add the prompt in preprocessing or pass prompt_key="
            )
        before = caller.stats.fallbacks
        [score] = await caller.items(
            [(judge_prompt(info[prompt_key]), solution_str, completion_text(ground_truth))]
        )
        return {"score": score, "cai_judge_fallback": float(caller.stats.fallbacks > before)}

    compute_score.stats = caller.stats  # type: ignore[attr-defined]
    return compute_score
