"""OpenRLHF: a `reward_func` file for `--reward.remote_url FILE.py` (docs/DESIGN.md §9).

OpenRLHF 0.11.2 can reach a reward service two ways (`openrlhf/utils/agent.py`,
`SingleTurnAgentExecutor`):

- `--reward.remote_url http://HOST/v1/rewards/openrlhf?constitution=…&principles=…`: its own
  HTTP client POSTs `{"query", "prompts", "labels"}` (one sample a call, 180 s, 5 tries) and
  the service answers `{"rewards", "scores", "extra_logs"}`; nothing of this SDK runs.
- `--reward.remote_url reward_func.py`: it loads the file and calls
  `reward_func(queries, prompts, labels)` in a worker thread. `make_reward_func` builds that
  function; it sends the same body to the same route, so both ways judge alike.

OpenRLHF never sends a group in one call, so this is reference mode: each response (the query
minus its prompt, the policy's special tokens stripped, by the service) against `labels[i]`.
A call that fails or outlasts `timeout` returns `fallback` for every query, in OpenRLHF's
shape, and is logged and counted (`reward_func.stats`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cai_judge_client.integrations._core import RewardCaller, make_sync

__all__ = ["make_reward_func"]


def make_reward_func(
    client: Any | None = None,
    *,
    constitution: str,
    principles: int | str = "all",
    seed: int = 0,
    aggregator: str | None = None,
    timeout: float = 170.0,
    fallback: float = 0.5,
) -> Callable[..., dict[str, Any]]:
    """`reward_func(queries, prompts, labels, **kwargs) -> {"rewards", "scores",
    "extra_logs"}` for OpenRLHF. `timeout` (total, seconds) stays under OpenRLHF's own 180 s.

    In the file OpenRLHF loads:

        from cai_judge_client.integrations.openrlhf import make_reward_func
        reward_func = make_reward_func(constitution="harmless", principles=4)
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

    async def judged(
        queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any
    ) -> dict[str, Any]:
        return await caller.openrlhf(queries, prompts, labels)

    sync = make_sync(judged)  # type: ignore[arg-type]

    def reward_func(
        queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any
    ) -> dict[str, Any]:
        return sync(queries, prompts, labels)  # type: ignore[return-value]

    reward_func.stats = caller.stats  # type: ignore[attr-defined]
    return reward_func
