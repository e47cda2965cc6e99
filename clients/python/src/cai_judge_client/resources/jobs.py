"""`client.jobs`: batch jobs (docs/DESIGN.md §5): submit pairs as streamed NDJSON
(`create`), read, list, cancel, wait for one, and page through its results as it runs.
Bodies and paging are in `_jobs.py`, the waiting decisions in `_labeling_plan.py`, so
`Jobs` and `AsyncJobs` differ only in `await`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from typing_extensions import Unpack

from cai_judge_client import _constants as c
from cai_judge_client._base_client import RequestOptions
from cai_judge_client._dataset import Progress
from cai_judge_client._jobs import NDJSON_HEADERS, JobBody, PairsSource, job_params, parse_page
from cai_judge_client._labeling_plan import (
    LabelingOptions,
    check_deadline,
    deadline_after,
    label_options,
    results_over,
)
from cai_judge_client._resource import AsyncAPIResource, SyncAPIResource
from cai_judge_client.types import Job, JobList, LabelResult

__all__ = ["AsyncJobs", "Jobs"]


def _create(options: LabelingOptions, key: str | None, content: Any) -> RequestOptions:
    params = job_params(label_options(options))
    return RequestOptions("POST", "/v1/jobs", params=params, headers=NDJSON_HEADERS,
                          content=content, idempotency_key=key)  # fmt: skip


def _page(job_id: str, cursor: int, page_size: int) -> RequestOptions:
    params = {"cursor": cursor, "limit": page_size}
    return RequestOptions("GET", f"/v1/jobs/{job_id}/results", params=params)


def _progress(job: Job, progress: bool | None) -> Progress:
    return Progress(progress, job.total, job.done + job.failed, f"job {job.id}")


class Jobs(SyncAPIResource):
    def create(
        self,
        pairs: PairsSource,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[LabelingOptions],
    ) -> Job:
        """Submit pairs (an iterable, or the path of a JSONL file) as a batch job.

        The pairs are streamed as NDJSON. Every retry sends the same body with the same
        Idempotency-Key, so the server makes one job however often the call is retried;
        pass your own key to make a re-run of your script find the same job too.

        The labeling options (`LabelingOptions`) go as query parameters; `calibrated`,
        `mode` and `cot_max_tokens` only when set, and a server whose jobs do not take them
        answers 422 naming the parameter.
        """
        body = JobBody(pairs)
        try:
            request = _create(options, idempotency_key, body.sync_content())
            return Job.model_validate(self._request(request).json())
        finally:
            body.close()

    def retrieve(self, job_id: str) -> Job:
        return Job.model_validate(self._request(RequestOptions("GET", f"/v1/jobs/{job_id}")).json())

    def cancel(self, job_id: str) -> Job:
        response = self._request(RequestOptions("DELETE", f"/v1/jobs/{job_id}"))
        return Job.model_validate(response.json())

    def list(self, *, cursor: int = 0, limit: int = 20) -> JobList:
        """This key's jobs, newest first; pass `next_cursor` back for the next page."""
        params = {"cursor": cursor, "limit": limit}
        return JobList.model_validate(
            self._request(RequestOptions("GET", "/v1/jobs", params=params)).json()
        )

    def wait(
        self,
        job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> Job:
        """Poll until the job is succeeded, failed or cancelled; a progress bar shows it.
        `timeout` (seconds) raises TimeoutError with the job's last status."""
        deadline = deadline_after(timeout)
        job = self.retrieve(job_id)
        bar = _progress(job, progress)
        try:
            while not job.finished:
                check_deadline(job, deadline, timeout)
                self._sleep(poll_interval)
                before = job.done + job.failed
                job = self.retrieve(job_id)
                bar.update(job.done + job.failed - before, job.failed)
        finally:
            bar.close()
        return job

    def iter_results(
        self,
        job_id: str,
        *,
        cursor: int = 0,
        page_size: int = c.DEFAULT_RESULTS_PAGE,
        poll_interval: float = 2.0,
    ) -> Iterator[LabelResult]:
        """Every result from `cursor` on, in input order, waiting for the job as it runs.

        Pages of `page_size` lines; a page holds only the finished prefix, so an empty page
        means "not yet" and is asked again after `poll_interval`. Stops at the job's total,
        or where a failed or cancelled job stopped. Raises JobResultsGone when a finished
        job's results are no longer on the server (evicted): asking again would not help.
        """
        job = self.retrieve(job_id)
        while cursor < job.total:
            response = self._request(_page(job_id, cursor, page_size))
            results, cursor, _ = parse_page(response, cursor)
            yield from results
            if results:
                continue
            if results_over(job, cursor):
                return
            job = self.retrieve(job_id)
            if not job.finished:
                self._sleep(poll_interval)


class AsyncJobs(AsyncAPIResource):
    async def create(
        self,
        pairs: PairsSource,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[LabelingOptions],
    ) -> Job:
        """`Jobs.create`, awaited (the body is spooled and streamed the same way)."""
        body = JobBody(pairs)
        try:
            request = _create(options, idempotency_key, body.async_content())
            return Job.model_validate((await self._request(request)).json())
        finally:
            body.close()

    async def retrieve(self, job_id: str) -> Job:
        response = await self._request(RequestOptions("GET", f"/v1/jobs/{job_id}"))
        return Job.model_validate(response.json())

    async def cancel(self, job_id: str) -> Job:
        response = await self._request(RequestOptions("DELETE", f"/v1/jobs/{job_id}"))
        return Job.model_validate(response.json())

    async def list(self, *, cursor: int = 0, limit: int = 20) -> JobList:
        """`Jobs.list`, awaited."""
        params = {"cursor": cursor, "limit": limit}
        response = await self._request(RequestOptions("GET", "/v1/jobs", params=params))
        return JobList.model_validate(response.json())

    async def wait(
        self,
        job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> Job:
        """`Jobs.wait`, awaited."""
        deadline = deadline_after(timeout)
        job = await self.retrieve(job_id)
        bar = _progress(job, progress)
        try:
            while not job.finished:
                check_deadline(job, deadline, timeout)
                await self._sleep(poll_interval)
                before = job.done + job.failed
                job = await self.retrieve(job_id)
                bar.update(job.done + job.failed - before, job.failed)
        finally:
            bar.close()
        return job

    async def iter_results(
        self,
        job_id: str,
        *,
        cursor: int = 0,
        page_size: int = c.DEFAULT_RESULTS_PAGE,
        poll_interval: float = 2.0,
    ) -> AsyncIterator[LabelResult]:
        """`Jobs.iter_results`, as an async iterator."""
        job = await self.retrieve(job_id)
        while cursor < job.total:
            response = await self._request(_page(job_id, cursor, page_size))
            results, cursor, _ = parse_page(response, cursor)
            for result in results:
                yield result
            if results:
                continue
            if results_over(job, cursor):
                return
            job = await self.retrieve(job_id)
            if not job.finished:
                await self._sleep(poll_interval)
