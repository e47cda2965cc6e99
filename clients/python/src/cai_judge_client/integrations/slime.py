"""slime: a `--group-rm` reward function over `POST /v1/rewards` (docs/DESIGN.md §9).

slime (THUDM/slime at 624b824a, `slime/rollout/rm_hub/__init__.py`) has two ways in:

- `--rm-type remote_rm --rm-url http://HOST/v1/rewards/slime?constitution=…`: slime POSTs
  `{"prompt", "response", "label"}` per sample and takes the JSON answer as the reward; the
  service judges the response against `label` (reference mode). Nothing of this SDK runs.
- `--group-rm --custom-rm-path your_module.group_rm`: slime awaits
  `group_rm(args, samples) -> list[float]` with a whole group (`batched_async_rm`), each
  sample carrying `.prompt` and `.response`. `make_group_rm` builds that function: the group
  is judged against itself (group mode), one reward per sample, in order.

A group not judged before `deadline` (or refused in place) gives every sample `fallback`
(0.5, the same for the whole group: zero advantage), logged and counted (`group_rm.stats`);
configuration errors raise. slime awaits many groups at once: `concurrency` bounds the
requests in flight across them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from cai_judge_client.integrations._core import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DEADLINE_S,
    RewardCaller,
    completion_text,
    judge_prompt,
)
from cai_judge_client.integrations.trl import resolve_deadline
from cai_judge_client.reward_types import ExploitPolicy, Opponents, Scoring

__all__ = ["make_group_rm"]


def make_group_rm(
    client: Any | None = None,
    *,
    constitution: str,
    principles: int | str = "all",
    seed: int = 0,
    aggregator: str | None = None,
    calibrated: bool = False,
    exploits: ExploitPolicy = "flag",
    opponents: Opponents = "all",
    scoring: Scoring = "mean",
    deadline: float = DEFAULT_DEADLINE_S,
    concurrency: int = DEFAULT_CONCURRENCY,
    fallback: float = 0.5,
    timeout: float | None = None,
) -> Callable[..., Coroutine[Any, Any, list[float]]]:
    """`group_rm(args, samples) -> list[float]` for slime's `--group-rm`; in your module:

    from cai_judge_client.integrations.slime import make_group_rm
    group_rm = make_group_rm(constitution="harmless")
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
            "opponents": opponents,
            "scoring": scoring,
        },
        deadline=resolve_deadline(deadline, timeout),
        fallback=fallback,
        concurrency=concurrency,
    )

    async def group_rm(args: Any, samples: Sequence[Any], **kwargs: Any) -> list[float]:
        if not samples:
            return []
        if len(samples) < 2:
            caller.alone("a group of 1", "nothing to judge it against")
            return [fallback]
        prompt = judge_prompt(samples[0].prompt)
        [rewards] = await caller.groups(
            [(prompt, [completion_text(sample.response) for sample in samples])]
        )
        return [fallback] * len(samples) if rewards is None else rewards

    group_rm.stats = caller.stats  # type: ignore[attr-defined]
    return group_rm
