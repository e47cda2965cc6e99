"""Deprecated: `groupwise_reward` is now a thin shim over the TRL adapter's group path.

The SDK has one reward path (docs/DESIGN.md §9: "adapters are thin, and none is a second code
path"): `cai_judge_client.integrations.trl.group_reward_func`, which sends whole groups to
`POST /v1/rewards` (the service schedules the pairs and computes the rewards), in requests
that fit the server's limits, under one deadline, with neutral and counted fallbacks. This
module's first release labelled every pair itself through `/v1/labels`, grouped completions
by equal prompt text (so two dataset rows with the same prompt became one group of 2G), and
turned refused pairs into silent ties. `groupwise_reward` now warns and delegates.

Groups are the trainer's: `num_generations` consecutive completions. Without it (the first
release's signature), a group is a maximal run of consecutive completions with the same
prompt, which is what TRL hands a process when each prompt is a distinct dataset row.
"""

from __future__ import annotations

import warnings
from typing import Any

from cai_judge_client._labeling_plan import OPTION_DEFAULTS
from cai_judge_client.integrations._core import (
    DEFAULT_CONCURRENCY,
    DEFAULT_FALLBACK,
    AsyncRewardFunc,
    make_sync,
)
from cai_judge_client.integrations.trl import _group_reward
from cai_judge_client.types import Aggregator

__all__ = ["AsyncRewardFunc", "groupwise_reward", "make_sync"]

# Long enough that a run of equal prompts is never cut by it: the shim groups by runs.
_WHOLE_RUN = 2**31 - 1


def groupwise_reward(
    client: Any | None = None,
    *,
    constitution: str,
    principles: int | str = OPTION_DEFAULTS["principles"],
    seed: int = OPTION_DEFAULTS["seed"],
    aggregator: Aggregator = "mean_logodds",
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = 120.0,
    fallback: float = DEFAULT_FALLBACK,
    pairs_per_request: int | None = None,
    num_generations: int | None = None,
    name: str | None = None,
) -> AsyncRewardFunc:
    """Deprecated: use `integrations.trl.group_reward_func(client, num_generations=G, ...)`.

    The same reward (each completion's mean win probability within its group), computed by
    that function. `timeout` is its whole-call `deadline`; `pairs_per_request` is no longer
    used (requests are sized from the server's limits).
    """
    warnings.warn(
        "cai_judge_client.groupwise_reward is deprecated: use "
        "cai_judge_client.integrations.trl.group_reward_func(client, num_generations=G, ...), "
        "which groups by the trainer's num_generations and sizes requests to the server",
        DeprecationWarning,
        stacklevel=2,
    )
    if num_generations is not None and num_generations < 2:
        raise ValueError(f"num_generations must be >= 2 to judge a group, got {num_generations}")
    return _group_reward(
        client,
        num_generations=num_generations or _WHOLE_RUN,
        options={
            "constitution": constitution,
            "principles": principles,
            "seed": seed,
            "aggregator": aggregator,
        },
        deadline=timeout,
        concurrency=concurrency,
        per_request=None,
        fallback=fallback,
        name=name or f"cai_judge_{constitution.split('@', 1)[0]}".replace("-", "_"),
    )
