"""The rewards wire types' first home, kept so that `from cai_judge_client.reward_types
import ...` goes on working: they live in `cai_judge_client.types.rewards` now."""

from cai_judge_client.types.rewards import (
    CompletionDetail,
    ExploitPolicy,
    GroupRewards,
    ItemReward,
    Opponents,
    RewardError,
    RewardMode,
    RewardProvenance,
    RewardResult,
    RewardsResponse,
    Scoring,
    parse_reward_result,
)

__all__ = [
    "CompletionDetail",
    "ExploitPolicy",
    "GroupRewards",
    "ItemReward",
    "Opponents",
    "RewardError",
    "RewardMode",
    "RewardProvenance",
    "RewardResult",
    "RewardsResponse",
    "Scoring",
    "parse_reward_result",
]
