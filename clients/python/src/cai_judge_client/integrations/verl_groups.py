"""verl with group rewards: an async `compute_score` whose samples are judged in their groups
(docs/DESIGN.md §9, "Group rewards for one-sample trainers").

verl 0.9.1's reward loop (`verl/experimental/reward_loop/reward_manager/naive.py`) calls
`compute_score(data_source=, solution_str=, ground_truth=, extra_info=)` once per sample, so a
call never holds a group. This adapter sends each sample to `POST /v1/rewards/sample` with the
group size (verl's `actor_rollout_ref.rollout.n`): the service holds it until the rest of its
group has arrived (from any of verl's reward workers, on any replica behind one Redis) or
`group_wait_s` passes, judges the group once, and answers this sample's reward in it. A group
is keyed by `extra_info[group_key]` when you name one (a dataset index, say), else the prompt.
A group of one is judged against `ground_truth`.

Three outcomes stay apart (§9): a configuration error (unknown constitution, bad option, bad
key: a 4xx other than 408/429) raises, so a typo never trains a policy on a constant;
backpressure (429/503) is retried by the client within `timeout`; a sample not judged within
`timeout` scores `fallback`, logged, counted (`compute_score.stats`) and flagged in its
`cai_judge_fallback` key, which, like `cai_judge_group_size`, every sample carries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from cai_judge_client._base_client import RequestOptions
from cai_judge_client._exceptions import APIStatusError
from cai_judge_client.integrations._core import (
    LoopClients,
    RewardStats,
    completion_text,
    judge_prompt,
    logger,
)
from cai_judge_client.reward_types import ExploitPolicy, Opponents, Scoring

__all__ = ["make_group_compute_score"]

# Statuses that are backpressure or a lost request, not the caller's mistake.
_RETRYABLE_CLIENT_STATUSES = (408, 429)


def make_group_compute_score(
    client: Any | None = None,
    *,
    constitution: str,
    group_size: int,
    principles: int | str = "all",
    seed: int = 0,
    aggregator: str | None = None,
    calibrated: bool = False,
    exploits: ExploitPolicy = "flag",
    opponents: Opponents = "all",
    scoring: Scoring = "mean",
    group_wait_s: float | None = None,
    prompt_key: str = "question",
    group_key: str | None = None,
    timeout: float = 60.0,
    fallback: float = 0.5,
) -> Callable[..., Coroutine[Any, Any, dict[str, float]]]:
    """An async `compute_score` for verl's reward loop that gives group rewards; in your file:

        from cai_judge_client.integrations.verl_groups import make_group_compute_score
        compute_score = make_group_compute_score(constitution="harmless", group_size=8)

    with `group_size` = `actor_rollout_ref.rollout.n`, and
    `custom_reward_function.path=that_file.py custom_reward_function.name=compute_score`.
    """
    if group_size < 1 or timeout <= 0:
        raise ValueError("group_size must be >= 1 and timeout > 0")
    params: dict[str, Any] = {
        "constitution": constitution,
        "principles": principles,
        "seed": seed,
        "aggregator": aggregator,
        # Sent only when set, so a default call's query string is what it always was.
        "calibrated": "true" if calibrated else None,
        "exploits": None if exploits == "flag" else exploits,
        "group_size": group_size,
        "group_wait_s": group_wait_s,
        "opponents": opponents,
        "scoring": scoring,
    }
    params = {k: v for k, v in params.items() if v is not None}
    stats = RewardStats()
    clients = LoopClients()

    async def api() -> Any:
        return client if client is not None else await clients.get()

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
        if group_key is not None and group_key not in info:
            raise ValueError(f"extra_info has no {group_key!r} (group_key=); it has {sorted(info)}")
        body = {
            "prompt": judge_prompt(info[prompt_key]),
            "completion": solution_str,
            "label": completion_text(ground_truth) if ground_truth is not None else None,
            "group_key": str(info[group_key]) if group_key is not None else None,
        }
        stats.calls += 1
        stats.completions += 1
        request = RequestOptions(
            "POST", "/v1/rewards/sample", json=body, params=params, timeout=timeout
        )
        try:
            response = await asyncio.wait_for((await api()).request(request), timeout)
            answer = response.json()
        except APIStatusError as error:
            if 400 <= error.status_code < 500 and error.status_code not in (
                _RETRYABLE_CLIENT_STATUSES
            ):
                raise  # a configuration error: loud, never a reward
            why = f"{type(error).__name__}: {error}"
        except asyncio.TimeoutError:  # noqa: UP041 (the SDK runs on 3.10, where it differs)
            stats.timeouts += 1
            why = f"no answer within the total timeout {timeout} s"
        except Exception as error:
            why = f"{type(error).__name__}: {error}"
        else:
            if answer["fallback"]:
                stats.fallbacks += 1
                stats.last_errors.append(f"the service fell back ({answer['how']})")
            return {
                "score": float(answer["reward"]),
                "cai_judge_fallback": float(bool(answer["fallback"])),
                "cai_judge_group_size": float(answer["group_size"]),
            }
        stats.errors += 1
        stats.fallbacks += 1
        stats.last_errors.append(why)
        logger.warning("cai-judge could not judge a sample: %s", why)
        return {"score": fallback, "cai_judge_fallback": 1.0, "cai_judge_group_size": 0.0}

    compute_score.stats = stats  # type: ignore[attr-defined]
    return compute_score
