"""`CaiJudge` and `AsyncCaiJudge`: a transport (`_base_client.py`) and its resources.

After openai-python's `_client.py`: the calls live in `resources/` (`client.labels`,
`client.jobs`, `client.constitutions`), each resource built on first use and holding this
client for its connection, settings and retries. The flat methods of the first release
(`label`, `label_dataset`, `submit_job`, ...) stay, as aliases of those calls (`alias` in
`_resource.py`), so existing code keeps working.
"""

from __future__ import annotations

from functools import cached_property

from cai_judge_client._base_client import AsyncAPIClient, SyncAPIClient
from cai_judge_client._resource import alias
from cai_judge_client.resources import (
    AsyncConstitutions,
    AsyncJobs,
    AsyncLabels,
    AsyncRewards,
    Constitutions,
    Jobs,
    Labels,
    Rewards,
)

__all__ = ["AsyncCaiJudge", "CaiJudge"]


class CaiJudge(SyncAPIClient):
    """The synchronous client.

    `CaiJudge()` reads `CAI_JUDGE_BASE_URL` and `CAI_JUDGE_API_KEY` when `base_url` and
    `api_key` are not passed. Use it as a context manager, or call `close()`.
    """

    @cached_property
    def labels(self) -> Labels:
        return Labels(self)

    @cached_property
    def jobs(self) -> Jobs:
        return Jobs(self)

    @cached_property
    def constitutions(self) -> Constitutions:
        return Constitutions(self)

    @cached_property
    def rewards(self) -> Rewards:
        return Rewards(self)

    # The first release's names.
    label = alias("labels", Labels.create)
    iter_label_dataset = alias("labels", Labels.iter_dataset)
    label_dataset = alias("labels", Labels.create_dataset)
    list_constitutions = alias("constitutions", Constitutions.list)
    get_constitution = alias("constitutions", Constitutions.retrieve)
    create_constitution = alias("constitutions", Constitutions.create)
    submit_job = alias("jobs", Jobs.create)
    get_job = alias("jobs", Jobs.retrieve)
    cancel_job = alias("jobs", Jobs.cancel)
    list_jobs = alias("jobs", Jobs.list)
    wait_job = alias("jobs", Jobs.wait)
    iter_job_results = alias("jobs", Jobs.iter_results)


class AsyncCaiJudge(AsyncAPIClient):
    """The asyncio client; the same calls as `CaiJudge`, awaited."""

    @cached_property
    def labels(self) -> AsyncLabels:
        return AsyncLabels(self)

    @cached_property
    def jobs(self) -> AsyncJobs:
        return AsyncJobs(self)

    @cached_property
    def constitutions(self) -> AsyncConstitutions:
        return AsyncConstitutions(self)

    @cached_property
    def rewards(self) -> AsyncRewards:
        return AsyncRewards(self)

    # The first release's names.
    label = alias("labels", AsyncLabels.create)
    iter_label_dataset = alias("labels", AsyncLabels.iter_dataset)
    label_dataset = alias("labels", AsyncLabels.create_dataset)
    list_constitutions = alias("constitutions", AsyncConstitutions.list)
    get_constitution = alias("constitutions", AsyncConstitutions.retrieve)
    create_constitution = alias("constitutions", AsyncConstitutions.create)
    submit_job = alias("jobs", AsyncJobs.create)
    get_job = alias("jobs", AsyncJobs.retrieve)
    cancel_job = alias("jobs", AsyncJobs.cancel)
    list_jobs = alias("jobs", AsyncJobs.list)
    wait_job = alias("jobs", AsyncJobs.wait)
    iter_job_results = alias("jobs", AsyncJobs.iter_results)
