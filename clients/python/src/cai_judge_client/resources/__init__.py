"""The SDK's calls grouped by resource, after openai-python's `resources/`: one module a
resource, each with a sync and an async class (`Labels`/`AsyncLabels`, ...), reached as
`client.labels`, `client.jobs`, `client.constitutions`, `client.rewards`."""

from cai_judge_client.resources.constitutions import AsyncConstitutions, Constitutions
from cai_judge_client.resources.jobs import AsyncJobs, Jobs
from cai_judge_client.resources.labels import AsyncLabels, Labels
from cai_judge_client.resources.rewards import AsyncRewards, Rewards

__all__ = [
    "AsyncConstitutions",
    "AsyncJobs",
    "AsyncLabels",
    "AsyncRewards",
    "Constitutions",
    "Jobs",
    "Labels",
    "Rewards",
]
