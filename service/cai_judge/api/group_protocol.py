"""The query string of the trainer-shaped reward routes, with group rewards (DESIGN.md §9).

OpenRLHF's and slime's clients fix their bodies, so everything else rides in the URL they are
given: the labeling options (protocol.RewardQuery) and, for group rewards, the group size,
how long a sample waits for its group and the group's schedule. Kept apart from protocol.py
so the grouped path (services/group_rewards.py) stays one module's concern.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from cai_judge.api.protocol import RewardQuery
from cai_judge.constants import MAX_GROUP_WAIT_S
from cai_judge.labeling.reward_schema import MAX_GROUP_SIZE
from cai_judge.labeling.rewards import Opponents
from cai_judge.services.group_rewards import GroupSpec
from cai_judge.services.rewards import Scoring
from cai_judge.settings import Settings


class TrainerRewardQuery(RewardQuery):
    group_size: Annotated[int, Field(ge=1, le=MAX_GROUP_SIZE)] | None = Field(
        default=None,
        description="Group rewards: the samples per group (OpenRLHF's n_samples_per_prompt, "
        "slime's n_samples_per_prompt). Each sample waits for its group (same prompt, same "
        "options) and gets its reward in the group; unset: each sample against its label.",
    )
    group_wait_s: Annotated[float, Field(gt=0, le=MAX_GROUP_WAIT_S)] | None = Field(
        default=None,
        description="Group rewards: how long a sample waits for the rest of its group before "
        "the group is judged as it is (default: the service's CAI_JUDGE_REWARD_GROUP_WAIT_S).",
    )
    opponents: Opponents = Field(
        default="all",
        description="Group rewards: `all` (round robin) or m matches per completion.",
    )
    scoring: Scoring = Field(
        default="mean", description="Group rewards: `mean` or `bradley_terry`."
    )

    def to_spec(self, settings: Settings) -> GroupSpec:
        assert self.group_size is not None
        return GroupSpec(
            self.to_options(),
            self.group_size,
            self.group_wait_s if self.group_wait_s is not None else settings.reward_group_wait_s,
            self.opponents,
            self.scoring,
        )
