"""`client.labels`: `POST /v1/labels` once (`create`), or over a dataset of any size
(`iter_dataset`, `create_dataset`: chunked, in order, halved when refused as too large,
resumable). The decisions live in `_labeling_plan.py`; these shells only send, so
`Labels` and `AsyncLabels` differ only in `await` (and threads against tasks for the
chunks in flight).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from typing_extensions import Unpack

from cai_judge_client._base_client import NOT_GIVEN, RequestOptions
from cai_judge_client._dataset import Chunk, DatasetSummary
from cai_judge_client._exceptions import APIStatusError
from cai_judge_client._labeling_plan import (
    ChunkOutcome,
    DatasetRun,
    Halves,
    LabelingOptions,
    after_refusal,
    answered,
    joined,
    label_body,
    label_options,
)
from cai_judge_client._resource import AsyncAPIResource, SyncAPIResource
from cai_judge_client.types import LabelResponse, LabelResult, PairInput

__all__ = ["AsyncLabels", "Labels"]


def _request(pairs: Iterable[PairInput], options: dict[str, Any], timeout: Any) -> RequestOptions:
    return RequestOptions("POST", "/v1/labels", json=label_body(pairs, options), timeout=timeout)


class Labels(SyncAPIResource):
    def create(
        self,
        pairs: Iterable[PairInput],
        *,
        timeout: Any = NOT_GIVEN,
        **options: Unpack[LabelingOptions],
    ) -> LabelResponse:
        """One `POST /v1/labels`: a result per pair, in order; a bad pair is a `PairError`
        in its place and the others are still labeled. The options: `LabelingOptions`."""
        return self._send(pairs, label_options(options), timeout)

    def iter_dataset(
        self,
        pairs: Iterable[PairInput],
        *,
        chunk_size: int = 32,
        concurrency: int = 4,
        progress: bool | None = None,
        total: int | None = None,
        summary: DatasetSummary | None = None,
        **options: Unpack[LabelingOptions],
    ) -> Iterator[LabelResult]:
        """Label any number of pairs, yielding one result per pair in input order.

        The input is read lazily, `chunk_size` pairs per request, at most `concurrency`
        requests in flight, so memory follows `chunk_size × concurrency`, not the dataset.
        Per-item errors are yielded in place (`PairError`, `index` = position in the
        input), never raised; a chunk the server refuses as too large is halved and retried.
        Pass a `DatasetSummary` to read counts and usage as it goes.
        """
        run = DatasetRun.start(pairs, options, chunk_size=chunk_size, concurrency=concurrency,
                               progress=progress, total=total, summary=summary)  # fmt: skip
        return self._ordered(run)

    def create_dataset(
        self,
        pairs: Iterable[PairInput],
        *,
        output: str | Path | None = None,
        chunk_size: int = 32,
        concurrency: int = 4,
        progress: bool | None = None,
        total: int | None = None,
        **options: Unpack[LabelingOptions],
    ) -> DatasetSummary:
        """Label a dataset of any size into `output` (JSONL, one line per pair in input
        order: a label, or `{id, index, error}`), and return the counts and the errors.

        Resumable: run it again with the same input and output after a crash and it skips
        the pairs already written (checking that each line belongs to the same pair and
        options), cuts a half-written last line, and continues. Without `output` the
        results are kept in `summary.results` (memory then grows with the dataset; use
        `output=` or `iter_dataset` for large ones). A resumed file must have been labeled
        with the same options.
        """
        run = DatasetRun.start(
            pairs, options, chunk_size=chunk_size, concurrency=concurrency,
            progress=progress, total=total, output=output, keep=True,
        )  # fmt: skip
        try:
            for result in self._ordered(run):
                run.keep(result)
        finally:
            run.close()
        return run.summary

    def _send(
        self, pairs: Iterable[PairInput], options: dict[str, Any], timeout: Any
    ) -> LabelResponse:
        response = self._request(_request(pairs, options, timeout))
        return LabelResponse.model_validate(response.json())

    def _label_chunk(self, chunk: Chunk, options: dict[str, Any]) -> ChunkOutcome:
        try:
            answer = self._send([pair for _, pair in chunk], options, NOT_GIVEN)
        except APIStatusError as error:
            step = after_refusal(error, chunk)
            if not isinstance(step, Halves):
                return step
            first = self._label_chunk(step.first, options)
            return joined(first, self._label_chunk(step.second, options))
        return answered(answer, chunk)

    def _ordered(self, run: DatasetRun) -> Iterator[LabelResult]:
        pending: deque[Future[ChunkOutcome]] = deque()
        pool = ThreadPoolExecutor(max_workers=run.concurrency, thread_name_prefix="cai-judge")
        try:
            for chunk in run.chunks():
                pending.append(pool.submit(self._label_chunk, chunk, run.options))
                if len(pending) >= run.concurrency:
                    yield from run.finished(pending.popleft().result())
            while pending:
                yield from run.finished(pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)
            run.progress.close()


class AsyncLabels(AsyncAPIResource):
    async def create(
        self,
        pairs: Iterable[PairInput],
        *,
        timeout: Any = NOT_GIVEN,
        **options: Unpack[LabelingOptions],
    ) -> LabelResponse:
        """`Labels.create`, awaited."""
        return await self._send(pairs, label_options(options), timeout)

    def iter_dataset(
        self,
        pairs: Iterable[PairInput],
        *,
        chunk_size: int = 32,
        concurrency: int = 4,
        progress: bool | None = None,
        total: int | None = None,
        summary: DatasetSummary | None = None,
        **options: Unpack[LabelingOptions],
    ) -> AsyncIterator[LabelResult]:
        """`Labels.iter_dataset`, as an async iterator (`async for`)."""
        run = DatasetRun.start(pairs, options, chunk_size=chunk_size, concurrency=concurrency,
                               progress=progress, total=total, summary=summary)  # fmt: skip
        return self._ordered(run)

    async def create_dataset(
        self,
        pairs: Iterable[PairInput],
        *,
        output: str | Path | None = None,
        chunk_size: int = 32,
        concurrency: int = 4,
        progress: bool | None = None,
        total: int | None = None,
        **options: Unpack[LabelingOptions],
    ) -> DatasetSummary:
        """`Labels.create_dataset`, awaited: resumable JSONL output, results in order."""
        run = DatasetRun.start(
            pairs, options, chunk_size=chunk_size, concurrency=concurrency,
            progress=progress, total=total, output=output, keep=True,
        )  # fmt: skip
        try:
            async for result in self._ordered(run):
                run.keep(result)
        finally:
            run.close()
        return run.summary

    async def _send(
        self, pairs: Iterable[PairInput], options: dict[str, Any], timeout: Any
    ) -> LabelResponse:
        response = await self._request(_request(pairs, options, timeout))
        return LabelResponse.model_validate(response.json())

    async def _label_chunk(self, chunk: Chunk, options: dict[str, Any]) -> ChunkOutcome:
        try:
            answer = await self._send([pair for _, pair in chunk], options, NOT_GIVEN)
        except APIStatusError as error:
            step = after_refusal(error, chunk)
            if not isinstance(step, Halves):
                return step
            first = await self._label_chunk(step.first, options)
            return joined(first, await self._label_chunk(step.second, options))
        return answered(answer, chunk)

    async def _ordered(self, run: DatasetRun) -> AsyncIterator[LabelResult]:
        pending: deque[asyncio.Task[ChunkOutcome]] = deque()
        try:
            for chunk in run.chunks():
                pending.append(asyncio.ensure_future(self._label_chunk(chunk, run.options)))
                if len(pending) >= run.concurrency:
                    for result in run.finished(await pending.popleft()):
                        yield result
            while pending:
                for result in run.finished(await pending.popleft()):
                    yield result
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            run.progress.close()
