"""The query string of the trainer-shaped reward routes, with group rewards (DESIGN.md §9).

OpenRLHF's and slime's clients fix their bodies, so everything else rides in the URL they are
given: the labeling options (schemas.RewardQuery) and, for group rewards, the group size,
how long a sample waits for its group and the group's schedule. Kept apart from schemas.py
so the grouped path (services/group_rewards.py) stays one module's concern.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cai_judge.api.schemas import RewardQuery
from cai_judge.constants import MAX_GROUP_WAIT_S
from cai_judge.labeling.reward_schema import MAX_GROUP_SIZE, Completion, Prompt
from cai_judge.labeling.rewards import Opponents
from cai_judge.services.group_rewards import GroupSample, GroupSpec, How, SampleReward
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
    opponents: Opponents | None = Field(
        default=None,
        description="Group rewards: `all` (round robin, the default) or m matches per completion.",
    )
    scoring: Scoring | None = Field(
        default=None, description="Group rewards: `mean` (the default) or `bradley_terry`."
    )

    @model_validator(mode="after")
    def _group_options_need_groups(self) -> TrainerRewardQuery:
        # On the ungrouped path these would be ignored: a forgotten group_size must not pass
        # silently as reference-mode rewards.
        given = {
            "group_wait_s": self.group_wait_s,
            "opponents": self.opponents,
            "scoring": self.scoring,
        }
        stray = [name for name, value in given.items() if value is not None]
        if stray and self.group_size is None:
            raise ValueError(f"{', '.join(stray)} only apply with group_size (group rewards)")
        return self

    def to_spec(self, settings: Settings, default_size: int | None = None) -> GroupSpec:
        size = self.group_size if self.group_size is not None else default_size
        assert size is not None, "the grouped path needs a group size"
        return GroupSpec(
            self.to_options(),
            size,
            self.group_wait_s if self.group_wait_s is not None else settings.reward_group_wait_s,
            self.opponents if self.opponents is not None else "all",
            self.scoring if self.scoring is not None else "mean",
            self.exploits,
        )


class SampleRewardRequest(BaseModel):
    """POST /v1/rewards/sample: one sample of a group, for one-sample trainers without a body
    of their own (verl's `compute_score`, through the SDK's verl group adapter)."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt
    completion: Completion
    label: Completion | None = Field(
        default=None, description="The reference that judges the sample if its group is of one."
    )
    group_key: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="The trainer's group id (e.g. verl's uid or a dataset index): samples with "
        "the same key and options form one group. Unset: the prompt is the key.",
    )

    def sample(self) -> GroupSample:
        prompt = (
            self.prompt if isinstance(self.prompt, str) else [m.model_dump() for m in self.prompt]
        )
        return GroupSample(prompt, self.completion, self.label or None, self.group_key)


class SampleRewardResponse(BaseModel):
    reward: float
    fallback: bool = Field(description="True: not judged (0.5, no advantage); log it.")
    group_size: int = Field(description="The size of the group it was judged in (1: alone).")
    how: How = Field(
        description="`group`, `reference` (a group of one, against its label) or `fallback`."
    )

    @classmethod
    def from_reward(cls, reward: SampleReward) -> SampleRewardResponse:
        return cls(
            reward=reward.reward,
            fallback=reward.fallback,
            group_size=reward.group_size,
            how=reward.how,
        )
