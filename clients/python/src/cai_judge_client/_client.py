"""`CaiJudge` and `AsyncCaiJudge`: the calls, over one shared base (`_base_client.py`).

The two classes mirror each other method for method; only `await` differs. Request bodies,
paging and the dataset bookkeeping live in `_jobs.py` and `_dataset.py`, shared by both.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cai_judge_client import _constants as c
from cai_judge_client._base_client import (
    NOT_GIVEN,
    AsyncAPIClient,
    RequestOptions,
    SyncAPIClient,
)
from cai_judge_client._dataset import (
    Chunk,
    DatasetSummary,
    IndexedPair,
    Progress,
    as_dict,
    chunk_error,
    chunked,
    fsync_close,
    is_splittable,
    length_hint,
    open_resumable,
    renumber,
    result_line,
)
from cai_judge_client._exceptions import APIStatusError
from cai_judge_client._jobs import (
    NDJSON_HEADERS,
    JobBody,
    PairsSource,
    job_params,
    parse_page,
    wire_options,
)
from cai_judge_client.types import (
    Aggregator,
    Constitution,
    ConstitutionList,
    ConstitutionSpec,
    ConstitutionSummary,
    Job,
    JobList,
    LabelResponse,
    LabelResult,
    Mode,
    PairInput,
    Usage,
)

__all__ = ["AsyncCaiJudge", "CaiJudge"]

# Creating a constitution answers 409 for a reserved id: permanent, so not retried.
_NO_CONFLICT_RETRY = c.RETRYABLE_STATUSES - {409}


def _label_body(pairs: Iterable[PairInput], options: dict[str, Any]) -> dict[str, Any]:
    return {"pairs": [as_dict(p) for p in pairs], **wire_options(options)}


def _spec_body(spec: ConstitutionSpec | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec, ConstitutionSpec):
        return spec.model_dump(mode="json", exclude_none=True)
    return spec


class CaiJudge(SyncAPIClient):
    """The synchronous client.

    `CaiJudge()` reads `CAI_JUDGE_BASE_URL` and `CAI_JUDGE_API_KEY` when `base_url` and
    `api_key` are not passed. Use it as a context manager, or call `close()`.
    """

    # ---- labels -------------------------------------------------------------------------

    def label(
        self,
        pairs: Iterable[PairInput],
        *,
        constitution: str,
        principles: int | str = "all",
        seed: int = 0,
        aggregator: Aggregator = "mean_logodds",
        per_principle: bool = False,
        calibrated: bool = False,
        mode: Mode = "plain",
        cot_max_tokens: int | None = None,
        timeout: Any = NOT_GIVEN,
    ) -> LabelResponse:
        """One `POST /v1/labels`: a result per pair, in order; a bad pair is a `PairError`
        in its place and the others are still labeled.

        `principles`: `"all"`, or k principles sampled per pair (seeded by `seed`).
        `calibrated=True`: `p_a`, `margin` and `preferred` come from the server's calibration
        profile for this model, template, constitution version, aggregator and principles,
        and `label.calibration` names the profile and keeps the judge's raw numbers; the
        server answers 422 (`UnprocessableEntityError`, param `calibrated`) when no profile
        fits. `mode="cot"`: the judge first writes a greedy rationale per principle and
        order (`cot_max_tokens` tokens each, the server's default 128 when None), then
        answers; much slower than `"plain"`. Its probabilities are clamped (train on those)
        and the unclamped ones kept in `raw_margin`/`raw_p_a`, with the `rationales`.
        """
        body = _label_body(
            pairs,
            _options(
                constitution,
                principles,
                seed,
                aggregator,
                per_principle,
                calibrated,
                mode,
                cot_max_tokens,
            ),
        )
        response = self.request(RequestOptions("POST", "/v1/labels", json=body, timeout=timeout))
        return LabelResponse.model_validate(response.json())

    def _label_chunk(
        self, chunk: Chunk, options: dict[str, Any]
    ) -> tuple[list[LabelResult], Usage]:
        try:
            answer = self.label([pair for _, pair in chunk], **options)
        except APIStatusError as error:
            if is_splittable(error, chunk):
                half = len(chunk) // 2
                first, first_usage = self._label_chunk(chunk[:half], options)
                second, second_usage = self._label_chunk(chunk[half:], options)
                first_usage.add(second_usage)
                return first + second, first_usage
            if error.status_code in (413, 422) and error.param == "pairs":
                return chunk_error(error, chunk), Usage()
            raise
        return renumber(answer.labels, chunk), answer.usage

    def _ordered(
        self,
        indexed: Iterator[IndexedPair],
        options: dict[str, Any],
        summary: DatasetSummary,
        chunk_size: int,
        concurrency: int,
        progress: Progress,
    ) -> Iterator[LabelResult]:
        pending: deque[Future[tuple[list[LabelResult], Usage]]] = deque()

        def drain(future: Future[tuple[list[LabelResult], Usage]]) -> Iterator[LabelResult]:
            results, usage = future.result()
            summary.usage.add(usage)
            for result in results:
                summary.record(result)
            progress.update(len(results), summary.failed)
            yield from results

        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cai-judge")
        try:
            for chunk in chunked(indexed, chunk_size):
                pending.append(pool.submit(self._label_chunk, chunk, options))
                if len(pending) >= concurrency:
                    yield from drain(pending.popleft())
            while pending:
                yield from drain(pending.popleft())
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)
            progress.close()

    def iter_label_dataset(
        self,
        pairs: Iterable[PairInput],
        *,
        constitution: str,
        principles: int | str = "all",
        seed: int = 0,
        aggregator: Aggregator = "mean_logodds",
        per_principle: bool = False,
        calibrated: bool = False,
        mode: Mode = "plain",
        cot_max_tokens: int | None = None,
        chunk_size: int = 32,
        concurrency: int = 4,
        progress: bool | None = None,
        total: int | None = None,
        summary: DatasetSummary | None = None,
    ) -> Iterator[LabelResult]:
        """Label any number of pairs, yielding one result per pair in input order.

        The input is read lazily, `chunk_size` pairs per request, at most `concurrency`
        requests in flight, so memory follows `chunk_size × concurrency`, not the dataset.
        Per-item errors are yielded in place (`PairError`, `index` = position in the
        input), never raised; a chunk the server refuses as too large is halved and retried.
        Pass a `DatasetSummary` to read counts and usage as it goes. The labeling options
        (`calibrated`, `mode="cot"`, ...) are those of `label()`.
        """
        _check_sizes(chunk_size, concurrency)
        summary = summary if summary is not None else DatasetSummary()
        options = _options(
            constitution,
            principles,
            seed,
            aggregator,
            per_principle,
            calibrated,
            mode,
            cot_max_tokens,
        )
        bar = Progress(progress, total if total is not None else length_hint(pairs), 0, "labeling")
        indexed = enumerate(as_dict(p) for p in pairs)
        return self._ordered(indexed, options, summary, chunk_size, concurrency, bar)

    def label_dataset(
        self,
        pairs: Iterable[PairInput],
        *,
        constitution: str,
        output: str | Path | None = None,
        principles: int | str = "all",
        seed: int = 0,
        aggregator: Aggregator = "mean_logodds",
        per_principle: bool = False,
        calibrated: bool = False,
        mode: Mode = "plain",
        cot_max_tokens: int | None = None,
        chunk_size: int = 32,
        concurrency: int = 4,
        progress: bool | None = None,
        total: int | None = None,
    ) -> DatasetSummary:
        """Label a dataset of any size into `output` (JSONL, one line per pair in input
        order: a label, or `{id, index, error}`), and return the counts and the errors.

        Resumable: run it again with the same input and output after a crash and it skips
        the pairs already written (checking that each line belongs to the same pair and
        options), cuts a half-written last line, and continues. Without `output` the
        results are kept in `summary.results` (memory then grows with the dataset; use
        `output=` or `iter_label_dataset` for large ones). The labeling options are those
        of `label()` (`calibrated=True`: the server's calibration profile, 422 if none fits;
        `mode="cot"`: rationales first, slower, clamped probabilities with the raw ones
        kept); a resumed file must have been labeled with the same ones.
        """
        _check_sizes(chunk_size, concurrency)
        summary = DatasetSummary()
        options = _options(
            constitution,
            principles,
            seed,
            aggregator,
            per_principle,
            calibrated,
            mode,
            cot_max_tokens,
        )
        indexed = enumerate(as_dict(p) for p in pairs)
        sink = None
        if output is not None:
            summary.output = Path(output)
            sink = open_resumable(summary.output, indexed, options, summary)
        else:
            summary.results = []
        size = total if total is not None else length_hint(pairs)
        bar = Progress(progress, size, summary.resumed, "labeling")
        try:
            for result in self._ordered(indexed, options, summary, chunk_size, concurrency, bar):
                if sink is not None:
                    sink.write(result_line(result))
                else:
                    assert summary.results is not None
                    summary.results.append(result)
        finally:
            if sink is not None:
                fsync_close(sink)
        return summary

    # ---- constitutions ------------------------------------------------------------------

    def list_constitutions(self) -> list[ConstitutionSummary]:
        response = self.request(RequestOptions("GET", "/v1/constitutions"))
        return ConstitutionList.model_validate(response.json()).constitutions

    def get_constitution(self, ref: str) -> Constitution:
        """`id` (the latest version) or `id@version` (a unique prefix of ≥ 8 hex digits)."""
        response = self.request(RequestOptions("GET", f"/v1/constitutions/{ref}"))
        return Constitution.model_validate(response.json())

    def create_constitution(self, spec: ConstitutionSpec | dict[str, Any]) -> Constitution:
        """Add an immutable version (needs an admin key when the server has keys)."""
        options = RequestOptions(
            "POST", "/v1/constitutions", json=_spec_body(spec), retry_statuses=_NO_CONFLICT_RETRY
        )
        return Constitution.model_validate(self.request(options).json())

    # ---- batch jobs ---------------------------------------------------------------------

    def submit_job(
        self,
        pairs: PairsSource,
        *,
        constitution: str,
        principles: int | str = "all",
        seed: int = 0,
        aggregator: Aggregator = "mean_logodds",
        per_principle: bool = False,
        calibrated: bool = False,
        mode: Mode = "plain",
        cot_max_tokens: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit pairs (an iterable, or the path of a JSONL file) as a batch job.

        The pairs are streamed as NDJSON. Every retry sends the same body with the same
        Idempotency-Key, so the server makes one job however often the call is retried;
        pass your own key to make a re-run of your script find the same job too.

        The labeling options are those of `label()`, sent as query parameters; `calibrated`,
        `mode` and `cot_max_tokens` only when set, and a server whose jobs do not take them
        answers 422 naming the parameter.
        """
        body = JobBody(pairs)
        try:
            options = RequestOptions(
                "POST",
                "/v1/jobs",
                params=job_params(
                    _options(
                        constitution,
                        principles,
                        seed,
                        aggregator,
                        per_principle,
                        calibrated,
                        mode,
                        cot_max_tokens,
                    )
                ),
                headers=NDJSON_HEADERS,
                content=body.sync_content(),
                idempotency_key=idempotency_key,
            )
            return Job.model_validate(self.request(options).json())
        finally:
            body.close()

    def get_job(self, job_id: str) -> Job:
        return Job.model_validate(self.request(RequestOptions("GET", f"/v1/jobs/{job_id}")).json())

    def cancel_job(self, job_id: str) -> Job:
        response = self.request(RequestOptions("DELETE", f"/v1/jobs/{job_id}"))
        return Job.model_validate(response.json())

    def list_jobs(self, *, cursor: int = 0, limit: int = 20) -> JobList:
        """This key's jobs, newest first; pass `next_cursor` back for the next page."""
        params = {"cursor": cursor, "limit": limit}
        response = self.request(RequestOptions("GET", "/v1/jobs", params=params))
        return JobList.model_validate(response.json())

    def wait_job(
        self,
        job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> Job:
        """Poll until the job is succeeded, failed or cancelled; a progress bar shows it.
        `timeout` (seconds) raises TimeoutError with the job's last status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get_job(job_id)
        bar = Progress(progress, job.total, job.done + job.failed, f"job {job_id}")
        try:
            while not job.finished:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(_wait_timeout(job, timeout))
                time.sleep(poll_interval)
                before = job.done + job.failed
                job = self.get_job(job_id)
                bar.update(job.done + job.failed - before, job.failed)
        finally:
            bar.close()
        return job

    def iter_job_results(
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
        or where a failed or cancelled job stopped.
        """
        job = self.get_job(job_id)
        while cursor < job.total:
            response = self.request(
                RequestOptions(
                    "GET",
                    f"/v1/jobs/{job_id}/results",
                    params={"cursor": cursor, "limit": page_size},
                )
            )
            results, cursor, _ = parse_page(response, cursor)
            yield from results
            if results:
                continue
            if job.finished and job.state != "succeeded":
                return  # it was over before this empty page: nothing more will come
            job = self.get_job(job_id)
            if not job.finished:
                time.sleep(poll_interval)


class AsyncCaiJudge(AsyncAPIClient):
    """The asyncio client; the same calls as `CaiJudge`, awaited."""

    async def label(
        self,
        pairs: Iterable[PairInput],
        *,
        constitution: str,
        principles: int | str = "all",
        seed: int = 0,
        aggregator: Aggregator = "mean_logodds",
        per_principle: bool = False,
        calibrated: bool = False,
        mode: Mode = "plain",
        cot_max_tokens: int | None = None,
        timeout: Any = NOT_GIVEN,
    ) -> LabelResponse:
        """`CaiJudge.label`, awaited (the same options: `calibrated`, `mode`, ...)."""
        body = _label_body(
            pairs,
            _options(
                constitution,
                principles,
                seed,
                aggregator,
                per_principle,
                calibrated,
                mode,
                cot_max_tokens,
            ),
        )
        options = RequestOptions("POST", "/v1/labels", json=body, timeout=timeout)
        return LabelResponse.model_validate((await self.request(options)).json())

    async def _label_chunk(
        self, chunk: Chunk, options: dict[str, Any]
    ) -> tuple[list[LabelResult], Usage]:
        try:
            answer = await self.label([pair for _, pair in chunk], **options)
        except APIStatusError as error:
            if is_splittable(error, chunk):
                half = len(chunk) // 2
                first, first_usage = await self._label_chunk(chunk[:half], options)
                second, second_usage = await self._label_chunk(chunk[half:], options)
                first_usage.add(second_usage)
                return first + second, first_usage
            if error.status_code in (413, 422) and error.param == "pairs":
                return chunk_error(error, chunk), Usage()
            raise
        return renumber(answer.labels, chunk), answer.usage

    async def _ordered(
        self,
        indexed: Iterator[IndexedPair],
        options: dict[str, Any],
        summary: DatasetSummary,
        chunk_size: int,
        concurrency: int,
        progress: Progress,
    ) -> AsyncIterator[LabelResult]:
        pending: deque[asyncio.Task[tuple[list[LabelResult], Usage]]] = deque()

        async def drain(task: asyncio.Task[tuple[list[LabelResult], Usage]]) -> list[LabelResult]:
            results, usage = await task
            summary.usage.add(usage)
            for result in results:
                summary.record(result)
            progress.update(len(results), summary.failed)
            return results

        try:
            for chunk in chunked(indexed, chunk_size):
                pending.append(asyncio.ensure_future(self._label_chunk(chunk, options)))
                if len(pending) >= concurrency:
                    for result in await drain(pending.popleft()):
                        yield result
            while pending:
                for result in await drain(pending.popleft()):
                    yield result
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            progress.close()

    def iter_label_dataset(
        self,
        pairs: Iterable[PairInput],
        *,
        constitution: str,
        principles: int | str = "all",
        seed: int = 0,
        aggregator: Aggregator = "mean_logodds",
        per_principle: bool = False,
        calibrated: bool = False,
        mode: Mode = "plain",
        cot_max_tokens: int | None = None,
        chunk_size: int = 32,
        concurrency: int = 4,
        progress: bool | None = None,
        total: int | None = None,
        summary: DatasetSummary | None = None,
    ) -> AsyncIterator[LabelResult]:
        """`CaiJudge.iter_label_dataset`, as an async iterator (`async for`)."""
        _check_sizes(chunk_size, concurrency)
        summary = summary if summary is not None else DatasetSummary()
        options = _options(
            constitution,
            principles,
            seed,
            aggregator,
            per_principle,
            calibrated,
            mode,
            cot_max_tokens,
        )
        bar = Progress(progress, total if total is not None else length_hint(pairs), 0, "labeling")
        indexed = enumerate(as_dict(p) for p in pairs)
        return self._ordered(indexed, options, summary, chunk_size, concurrency, bar)

    async def label_dataset(
        self,
        pairs: Iterable[PairInput],
        *,
        constitution: str,
        output: str | Path | None = None,
        principles: int | str = "all",
        seed: int = 0,
        aggregator: Aggregator = "mean_logodds",
        per_principle: bool = False,
        calibrated: bool = False,
        mode: Mode = "plain",
        cot_max_tokens: int | None = None,
        chunk_size: int = 32,
        concurrency: int = 4,
        progress: bool | None = None,
        total: int | None = None,
    ) -> DatasetSummary:
        """`CaiJudge.label_dataset`, awaited: resumable JSONL output, results in order."""
        _check_sizes(chunk_size, concurrency)
        summary = DatasetSummary()
        options = _options(
            constitution,
            principles,
            seed,
            aggregator,
            per_principle,
            calibrated,
            mode,
            cot_max_tokens,
        )
        indexed = enumerate(as_dict(p) for p in pairs)
        sink = None
        if output is not None:
            summary.output = Path(output)
            sink = open_resumable(summary.output, indexed, options, summary)
        else:
            summary.results = []
        size = total if total is not None else length_hint(pairs)
        bar = Progress(progress, size, summary.resumed, "labeling")
        try:
            stream = self._ordered(indexed, options, summary, chunk_size, concurrency, bar)
            async for result in stream:
                if sink is not None:
                    sink.write(result_line(result))
                else:
                    assert summary.results is not None
                    summary.results.append(result)
        finally:
            if sink is not None:
                fsync_close(sink)
        return summary

    async def list_constitutions(self) -> list[ConstitutionSummary]:
        response = await self.request(RequestOptions("GET", "/v1/constitutions"))
        return ConstitutionList.model_validate(response.json()).constitutions

    async def get_constitution(self, ref: str) -> Constitution:
        """`id` (the latest version) or `id@version` (a unique prefix of ≥ 8 hex digits)."""
        response = await self.request(RequestOptions("GET", f"/v1/constitutions/{ref}"))
        return Constitution.model_validate(response.json())

    async def create_constitution(self, spec: ConstitutionSpec | dict[str, Any]) -> Constitution:
        """Add an immutable version (needs an admin key when the server has keys)."""
        options = RequestOptions(
            "POST", "/v1/constitutions", json=_spec_body(spec), retry_statuses=_NO_CONFLICT_RETRY
        )
        return Constitution.model_validate((await self.request(options)).json())

    async def submit_job(
        self,
        pairs: PairsSource,
        *,
        constitution: str,
        principles: int | str = "all",
        seed: int = 0,
        aggregator: Aggregator = "mean_logodds",
        per_principle: bool = False,
        calibrated: bool = False,
        mode: Mode = "plain",
        cot_max_tokens: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """`CaiJudge.submit_job`, awaited (the body is spooled and streamed the same way)."""
        body = JobBody(pairs)
        try:
            options = RequestOptions(
                "POST",
                "/v1/jobs",
                params=job_params(
                    _options(
                        constitution,
                        principles,
                        seed,
                        aggregator,
                        per_principle,
                        calibrated,
                        mode,
                        cot_max_tokens,
                    )
                ),
                headers=NDJSON_HEADERS,
                content=body.async_content(),
                idempotency_key=idempotency_key,
            )
            return Job.model_validate((await self.request(options)).json())
        finally:
            body.close()

    async def get_job(self, job_id: str) -> Job:
        response = await self.request(RequestOptions("GET", f"/v1/jobs/{job_id}"))
        return Job.model_validate(response.json())

    async def cancel_job(self, job_id: str) -> Job:
        response = await self.request(RequestOptions("DELETE", f"/v1/jobs/{job_id}"))
        return Job.model_validate(response.json())

    async def list_jobs(self, *, cursor: int = 0, limit: int = 20) -> JobList:
        """`CaiJudge.list_jobs`, awaited."""
        params = {"cursor": cursor, "limit": limit}
        response = await self.request(RequestOptions("GET", "/v1/jobs", params=params))
        return JobList.model_validate(response.json())

    async def wait_job(
        self,
        job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> Job:
        """`CaiJudge.wait_job`, awaited."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = await self.get_job(job_id)
        bar = Progress(progress, job.total, job.done + job.failed, f"job {job_id}")
        try:
            while not job.finished:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(_wait_timeout(job, timeout))
                await asyncio.sleep(poll_interval)
                before = job.done + job.failed
                job = await self.get_job(job_id)
                bar.update(job.done + job.failed - before, job.failed)
        finally:
            bar.close()
        return job

    async def iter_job_results(
        self,
        job_id: str,
        *,
        cursor: int = 0,
        page_size: int = c.DEFAULT_RESULTS_PAGE,
        poll_interval: float = 2.0,
    ) -> AsyncIterator[LabelResult]:
        """`CaiJudge.iter_job_results`, as an async iterator."""
        job = await self.get_job(job_id)
        while cursor < job.total:
            response = await self.request(
                RequestOptions(
                    "GET",
                    f"/v1/jobs/{job_id}/results",
                    params={"cursor": cursor, "limit": page_size},
                )
            )
            results, cursor, _ = parse_page(response, cursor)
            for result in results:
                yield result
            if results:
                continue
            if job.finished and job.state != "succeeded":
                return  # it was over before this empty page: nothing more will come
            job = await self.get_job(job_id)
            if not job.finished:
                await asyncio.sleep(poll_interval)


def _options(
    constitution: str,
    principles: int | str,
    seed: int,
    aggregator: str,
    per_principle: bool,
    calibrated: bool,
    mode: str,
    cot_max_tokens: int | None,
) -> dict[str, Any]:
    """Every labeling option, as `label()` takes them (also what a resumed file is checked
    against)."""
    return {
        "constitution": constitution,
        "principles": principles,
        "seed": seed,
        "aggregator": aggregator,
        "per_principle": per_principle,
        "calibrated": calibrated,
        "mode": mode,
        "cot_max_tokens": cot_max_tokens,
    }


def _check_sizes(chunk_size: int, concurrency: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")


def _wait_timeout(job: Job, timeout: float | None) -> str:
    return (
        f"job {job.id} still {job.state} after {timeout} s ({job.done + job.failed} of "
        f"{job.total} pairs); wait again, or cancel_job({job.id!r})"
    )
