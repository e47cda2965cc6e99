"""TRL `GRPOTrainer` reward functions over `POST /v1/rewards` (docs/DESIGN.md §9).

TRL (1.16, `GRPOTrainer._calculate_rewards`) calls every reward function with the whole
generation batch of one process: `reward_func(prompts=, completions=, completion_ids=,
**kwargs)`, where kwargs carry the dataset's other columns (one value per completion),
`trainer_state`, `log_extra` and `log_metric`. It awaits async functions on its own loop, and
calls plain ones directly.

- `group_reward_func`: completions are judged against the others of their group. Groups come
  from TRL's `num_generations`, in order (TRL repeats each prompt `num_generations` times,
  consecutively), never from equal prompt text: two dataset rows with the same prompt are two
  groups. A run boundary also closes a group where the prompt changes, which is what happens
  when TRL splits a group across processes (a process's slice of the generation batch need
  not be a multiple of `num_generations`): each process then judges its part of the group as
  a smaller group, and a part of one completion gets the fallback. Keep
  `per_device_train_batch_size × gradient_accumulation_steps` a multiple of
  `num_generations` to keep groups whole.
- `reference_reward_func`: each completion against the reference response found in the
  dataset column the user names (`reference_column`), e.g. the dataset's chosen answer.

Both split the generation batch into requests that fit the server's limits, run at most
`concurrency` at once, and bound the whole call by `deadline` (`_core.RewardCaller`). A
completion not judged in time gets a neutral fallback (the mean of its judged group mates,
else `fallback`), and is counted (in completions, both modes alike) in `func.stats`
(`make_sync(func).stats` is the same object) and in the trainer's logs through TRL's
`log_metric`: `cai_judge/fallback_fraction`, `cai_judge/fallbacks`, `cai_judge/errors`,
`cai_judge/timeouts`, this call's completions each. Configuration errors raise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from typing_extensions import Unpack

from cai_judge_client.integrations._core import (
    AsyncRewardFunc,
    GroupRewardOptions,
    Prompt,
    RewardCaller,
    RewardOptions,
    RewardStats,
    completion_text,
    judge_prompt,
    make_sync,
    neutral_fill,
    split_options,
)

__all__ = [
    "group_reward_func",
    "group_slices",
    "make_sync",
    "reference_reward_func",
    "resolve_deadline",
]


def group_slices(prompts: Sequence[Any], num_generations: int) -> list[range]:
    """Consecutive runs of at most `num_generations` completions of one prompt, in order."""
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    slices: list[range] = []
    start = 0
    for index in range(1, len(prompts) + 1):
        if (
            index == len(prompts)
            or index - start == num_generations
            or prompts[index] != prompts[start]
        ):
            slices.append(range(start, index))
            start = index
    return slices


def _counts(stats: RewardStats) -> tuple[int, int, int]:
    return stats.fallbacks, stats.errors, stats.timeouts


def _report(
    caller: RewardCaller, kwargs: dict[str, Any], before: tuple[int, int, int], n: int
) -> None:
    """This call's counts, in completions, into TRL's logged metrics."""
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and n:
        fallbacks, errors, timeouts = (
            now - then for now, then in zip(_counts(caller.stats), before, strict=True)
        )
        log_metric("cai_judge/fallback_fraction", fallbacks / n)
        log_metric("cai_judge/fallbacks", float(fallbacks))
        log_metric("cai_judge/errors", float(errors))
        log_metric("cai_judge/timeouts", float(timeouts))


def resolve_deadline(deadline: float, timeout: float | None) -> float:
    """`timeout` is the first release's name for `deadline` (it was always the whole call)."""
    if timeout is None:
        return deadline
    warnings.warn(
        "timeout= is deprecated: pass deadline= (the whole call, retries included)",
        DeprecationWarning,
        stacklevel=3,
    )
    return timeout


def _name(name: str | None, constitution: str, mode: str) -> str:
    return name or f"cai_judge_{constitution.split('@', 1)[0]}_{mode}".replace("-", "_")


def group_reward_func(
    client: Any | None = None,
    *,
    num_generations: int,
    constitution: str,
    per_request: int | None = None,
    name: str | None = None,
    **options: Unpack[GroupRewardOptions],
) -> AsyncRewardFunc:
    """An async GRPO reward: each completion's reward within its group (mean win
    probability, or centred Bradley–Terry strength with `scoring="bradley_terry"`).

    Pass `num_generations` as given to `GRPOConfig`. `opponents="all"` judges every pair of a
    group; an int m judges a seeded, balanced G·m/2 of them. `deadline` bounds the whole call
    in seconds (default 600), backpressure retries included; `concurrency` bounds the requests
    in flight and `per_request` the groups in one request (default: what the server's limits
    allow). A group not judged in time gets `fallback` for each completion (zero advantage).
    The options are `GroupRewardOptions`.

    The defenses for a GRPO run (README, "GRPO with length control"): `calibrated=True`
    length-debiases every match with the server's calibration profile for these options
    (fit it on the policy's own samples: `cai-judge calibrate --unlabeled`);
    `exploits="floor"` gives a completion flagged as a judge exploit (empty, a master key,
    text addressed to the evaluator) its group's lowest reward. Both off by default, and then
    nothing of them is sent.
    """
    if num_generations < 2:
        raise ValueError(f"num_generations must be >= 2 to judge a group, got {num_generations}")
    judge, call = split_options(constitution, options, GroupRewardOptions)
    return _group_reward(
        client,
        num_generations=num_generations,
        options=judge,
        deadline=resolve_deadline(call["deadline"], call["timeout"]),
        concurrency=call["concurrency"],
        per_request=per_request,
        fallback=call["fallback"],
        name=_name(name, constitution, "group"),
    )


def _group_reward(
    client: Any | None,
    *,
    num_generations: int,
    options: dict[str, Any],
    deadline: float,
    concurrency: int,
    per_request: int | None,
    fallback: float,
    name: str,
) -> AsyncRewardFunc:
    """The one group-mode path (`group_reward_func`, and the deprecated
    `rewards.groupwise_reward`)."""
    caller = RewardCaller(
        client,
        options,
        deadline=deadline,
        fallback=fallback,
        concurrency=concurrency,
        per_request=per_request,
    )

    async def reward(
        prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any
    ) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        before = _counts(caller.stats)
        slices = group_slices(prompts, num_generations)
        values: list[float | None] = [None] * len(completions)
        sent: list[range] = []
        groups: list[tuple[Prompt, list[str]]] = []
        for part in slices:
            if len(part) < 2:
                caller.alone(
                    f"completion {part.start}", "alone in its group (split across processes?)"
                )
                continue
            sent.append(part)
            groups.append(
                (judge_prompt(prompts[part.start]), [completion_text(completions[i]) for i in part])
            )
        for part, judged in zip(sent, await caller.groups(groups), strict=True):
            if judged is not None:
                for index, value in zip(part, judged, strict=True):
                    values[index] = value
        _report(caller, kwargs, before, len(completions))
        return neutral_fill(values, slices, fallback)

    reward.__name__ = name
    reward.stats = caller.stats  # type: ignore[attr-defined]
    return reward


def reference_reward_func(
    client: Any | None = None,
    *,
    reference_column: str,
    constitution: str,
    num_generations: int | None = None,
    per_request: int | None = None,
    name: str | None = None,
    **options: Unpack[RewardOptions],
) -> AsyncRewardFunc:
    """An async reward: P(completion ≻ reference) under the constitution, the reference read
    from the dataset column `reference_column` (TRL hands every column to reward functions,
    one value per completion; a chat reference's last message is used).

    Pass `num_generations` (as given to `GRPOConfig`) so that a completion not judged in time
    gets the mean of its judged group mates (no advantage over them); without it, it gets
    `fallback`. `deadline`, `concurrency` and `per_request` (items) as in `group_reward_func`;
    the options are `RewardOptions`.
    """
    if num_generations is not None and num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    judge, call = split_options(constitution, options, RewardOptions)
    fallback = call["fallback"]
    caller = RewardCaller(
        client,
        judge,
        deadline=resolve_deadline(call["deadline"], call["timeout"]),
        fallback=fallback,
        concurrency=call["concurrency"],
        per_request=per_request,
    )

    async def reward(
        prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any
    ) -> list[float]:
        if reference_column not in kwargs:
            raise ValueError(
                f"reference_column {reference_column!r} is not a column of the dataset; TRL "
                f"passed {sorted(k for k in kwargs if not k.startswith(('log_', 'trainer_')))}"
            )
        references = kwargs[reference_column]
        if not len(prompts) == len(completions) == len(references):
            raise ValueError(
                f"{len(prompts)} prompts, {len(completions)} completions and "
                f"{len(references)} references"
            )
        before = _counts(caller.stats)
        values = await caller.items(
            [
                (judge_prompt(p), completion_text(c), completion_text(r))
                for p, c, r in zip(prompts, completions, references, strict=True)
            ]
        )
        _report(caller, kwargs, before, len(completions))
        groups = group_slices(prompts, num_generations) if num_generations else None
        return neutral_fill(values, groups, fallback)

    reward.__name__ = _name(name, constitution, "reference")
    reward.stats = caller.stats  # type: ignore[attr-defined]
    return reward
