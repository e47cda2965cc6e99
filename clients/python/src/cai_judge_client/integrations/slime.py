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

from typing_extensions import Unpack

from cai_judge_client.integrations._core import (
    GroupRewardOptions,
    RewardCaller,
    completion_text,
    judge_prompt,
    split_options,
)
from cai_judge_client.integrations.trl import resolve_deadline

__all__ = ["make_group_rm"]


def make_group_rm(
    client: Any | None = None,
    *,
    constitution: str,
    **options: Unpack[GroupRewardOptions],
) -> Callable[..., Coroutine[Any, Any, list[float]]]:
    """`group_rm(args, samples) -> list[float]` for slime's `--group-rm`; in your module:

    from cai_judge_client.integrations.slime import make_group_rm
    group_rm = make_group_rm(constitution="harmless")

    The options are `GroupRewardOptions`.
    """
    judge, call = split_options(constitution, options, GroupRewardOptions)
    fallback = call["fallback"]
    caller = RewardCaller(
        client,
        judge,
        deadline=resolve_deadline(call["deadline"], call["timeout"]),
        fallback=fallback,
        concurrency=call["concurrency"],
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
