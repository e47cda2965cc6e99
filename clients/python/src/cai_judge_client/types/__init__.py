"""Typed requests and results mirroring the service's wire schema, one module a resource
as the client's resources are (docs/DESIGN.md §8; openai-python's `types/`):
labels.py, jobs.py, constitutions.py, rewards.py, and shared.py for what several carry.

Every name is importable from here, as it was when this was one module.
"""

from cai_judge_client.types.constitutions import (
    Constitution,
    ConstitutionList,
    ConstitutionSpec,
    ConstitutionSummary,
    Principle,
    RevisionExample,
)
from cai_judge_client.types.jobs import TERMINAL_JOB_STATES, Job, JobList, JobState
from cai_judge_client.types.labels import (
    TRANSIENT_ERROR_TYPES,
    Aggregator,
    ChatMessage,
    Label,
    LabelCalibration,
    LabelRequest,
    LabelResponse,
    LabelResult,
    Mode,
    Pair,
    PairError,
    PairInput,
    PrincipleResult,
    Rationale,
    Usage,
    parse_result,
)
from cai_judge_client.types.rewards import (
    CompletionDetail,
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
from cai_judge_client.types.shared import ConstitutionRef, ErrorDetail, TemplateRef

__all__ = [
    "TERMINAL_JOB_STATES",
    "TRANSIENT_ERROR_TYPES",
    "Aggregator",
    "ChatMessage",
    "CompletionDetail",
    "Constitution",
    "ConstitutionList",
    "ConstitutionRef",
    "ConstitutionSpec",
    "ConstitutionSummary",
    "ErrorDetail",
    "GroupRewards",
    "ItemReward",
    "Job",
    "JobList",
    "JobState",
    "Label",
    "LabelCalibration",
    "LabelRequest",
    "LabelResponse",
    "LabelResult",
    "Mode",
    "Opponents",
    "Pair",
    "PairError",
    "PairInput",
    "Principle",
    "PrincipleResult",
    "Rationale",
    "RevisionExample",
    "RewardError",
    "RewardMode",
    "RewardProvenance",
    "RewardResult",
    "RewardsResponse",
    "Scoring",
    "TemplateRef",
    "Usage",
    "parse_result",
    "parse_reward_result",
]
