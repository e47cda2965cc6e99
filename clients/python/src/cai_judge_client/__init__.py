"""cai-judge-client: the Python SDK for the cai-judge preference-labeling service.

    from cai_judge_client import CaiJudge
    with CaiJudge() as judge:          # CAI_JUDGE_BASE_URL, CAI_JUDGE_API_KEY
        judge.labels.create_dataset(pairs, constitution="harmless", output="labels.jsonl")

It depends on httpx, pydantic and tenacity only, never on the service package, torch or
vLLM (docs/DESIGN.md §8), so it installs in any training environment.
"""

from cai_judge_client._base_client import NOT_GIVEN, RetryPolicy
from cai_judge_client._client import AsyncCaiJudge, CaiJudge
from cai_judge_client._dataset import DatasetSummary
from cai_judge_client._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CaiJudgeError,
    ConflictError,
    InternalServerError,
    JobResultsGone,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from cai_judge_client._labeling_plan import LabelingOptions
from cai_judge_client._version import __version__
from cai_judge_client.export import ExportSummary, reward_rows, to_reward_dataset
from cai_judge_client.rewards import groupwise_reward, make_sync
from cai_judge_client.types import (
    Constitution,
    ConstitutionSpec,
    ConstitutionSummary,
    Job,
    JobList,
    Label,
    LabelResponse,
    LabelResult,
    Pair,
    PairError,
    Principle,
    Usage,
)

__all__ = [
    "NOT_GIVEN",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncCaiJudge",
    "AuthenticationError",
    "BadRequestError",
    "CaiJudge",
    "CaiJudgeError",
    "ConflictError",
    "Constitution",
    "ConstitutionSpec",
    "ConstitutionSummary",
    "DatasetSummary",
    "ExportSummary",
    "InternalServerError",
    "Job",
    "JobList",
    "JobResultsGone",
    "Label",
    "LabelResponse",
    "LabelResult",
    "LabelingOptions",
    "NotFoundError",
    "Pair",
    "PairError",
    "PermissionDeniedError",
    "Principle",
    "RateLimitError",
    "RequestTooLargeError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "Usage",
    "__version__",
    "groupwise_reward",
    "make_sync",
    "reward_rows",
    "to_reward_dataset",
]
