"""verl: an async `compute_score` judged against the ground truth (docs/DESIGN.md §9).

verl 0.9.1's reward managers (`verl/experimental/reward_loop/reward_manager/naive.py`, and
`verl/workers/reward_manager/naive.py` for sync functions) call
`compute_score(data_source=, solution_str=, ground_truth=, extra_info=)` once per sample,
awaiting it when it is a coroutine function, and read a float or `{"score": float, ...}`
whose other keys become `reward_extra_info` columns. A call never holds a group or a prompt,
so this is reference mode: the response against `ground_truth`, with the prompt taken from
`extra_info[prompt_key]` (verl's data recipes, e.g. `examples/data_preprocess/gsm8k.py`, store
the question there; add it to `extra_info` in your preprocessing if they do not).

A sample not judged before `deadline` (or refused in place) scores `fallback` (one sample
a call: its group is not known here, so the neutral value is 0.5; the server's group assembly
is the way to group rewards for verl), is logged and counted (`compute_score.stats`), and
says so in its own `cai_judge_fallback` key (always present, so every sample has the same
extra-info columns). The flag is this sample's: verl awaits many `compute_score` calls at
once, so it is read from this call's answer, never from a shared counter. Configuration
errors (unknown constitution, bad option or key) raise.

verl 0.9.1's `main_ppo` reads the reward file from `reward.custom_reward_function.path`
(`verl/trainer/ppo/reward.py`, `get_custom_reward_fn`); the top-level
`custom_reward_function.path` is only migrated by the fully-async entry point, so under
`main_ppo` it is silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from cai_judge_client.integrations._core import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DEADLINE_S,
    RewardCaller,
    completion_text,
    judge_prompt,
)
from cai_judge_client.integrations.trl import resolve_deadline
from cai_judge_client.reward_types import ExploitPolicy

__all__ = ["make_compute_score"]


def make_compute_score(
    client: Any | None = None,
    *,
    constitution: str,
    principles: int | str = "all",
    seed: int = 0,
    aggregator: str | None = None,
    calibrated: bool = False,
    exploits: ExploitPolicy = "flag",
    prompt_key: str = "question",
    deadline: float = DEFAULT_DEADLINE_S,
    concurrency: int = DEFAULT_CONCURRENCY,
    fallback: float = 0.5,
    timeout: float | None = None,
) -> Callable[..., Coroutine[Any, Any, dict[str, float]]]:
    """An async `compute_score` for verl's reward loop; in your reward file:

        from cai_judge_client.integrations.verl import make_compute_score
        compute_score = make_compute_score(constitution="harmless")

    and `reward.custom_reward_function.path=that_file.py
    reward.custom_reward_function.name=compute_score`. `deadline` bounds each sample's call
    (retries of backpressure included); `concurrency` bounds the requests in flight.
    """
    caller = RewardCaller(
        client,
        {
            "constitution": constitution,
            "principles": principles,
            "seed": seed,
            "aggregator": aggregator,
            "calibrated": calibrated or None,
            "exploits": None if exploits == "flag" else exploits,
        },
        deadline=resolve_deadline(deadline, timeout),
        fallback=fallback,
        concurrency=concurrency,
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
        [score] = await caller.items(
            [(judge_prompt(info[prompt_key]), solution_str, completion_text(ground_truth))]
        )
        if score is None:
            return {"score": fallback, "cai_judge_fallback": 1.0}
        return {"score": score, "cai_judge_fallback": 0.0}

    compute_score.stats = caller.stats  # type: ignore[attr-defined]
    return compute_score
