"""What the sync and async clients decide without sending anything: the labeling options,
request bodies, halving a refused chunk, and the dataset bookkeeping (ordering, counts,
progress, the resumable output file).

Kept as plain functions and one small class so that each resource pair in `resources/`
is two thin shells around the same decisions, differing only in `await` (openai-python
does the same with its shared `_base_client.py` helpers). The file and chunk mechanics
they build on are in `_dataset.py`; the wire contract is docs/DESIGN.md §5.
"""

# No `from __future__ import annotations`: LabelingOptions must see `Required` at run time
# (its `__required_keys__`), so the annotations here are evaluated.

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# typing_extensions, not typing: the SDK still runs on 3.10, which has neither.
from typing_extensions import Required, TypedDict  # noqa: UP035

from cai_judge_client._dataset import (
    Chunk,
    DatasetSummary,
    IndexedPair,
    Progress,
    ResumeCheck,
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
from cai_judge_client._exceptions import APIStatusError, JobResultsGone
from cai_judge_client._jobs import wire_options
from cai_judge_client.types import (
    Aggregator,
    ConstitutionSpec,
    Ensemble,
    Job,
    Label,
    LabelResponse,
    LabelResult,
    Mode,
    PairInput,
    Usage,
)


class LabelingOptions(TypedDict, total=False):
    """The labeling options every call takes (`label`, datasets, jobs), declared once.

    `principles`: `"all"`, or k principles sampled per pair (seeded by `seed`).
    `calibrated=True`: `p_a`, `margin` and `preferred` come from the server's calibration
    profile for this model, template, constitution version, aggregator and principles
    (422, param `calibrated`, when none fits). `mode="cot"`: the judge writes a rationale
    per principle and order first (`cot_max_tokens` tokens each, the server's default when
    None); much slower, probabilities clamped with the raw ones kept.
    `ensemble="adaptive"`: principles are scored in seeded rounds until the side cannot
    change at confidence 1 - `ensemble_delta` (fewer score units; plain mode only); each
    label's `ensemble` says where it stopped and its `principles` are those scored.
    """

    constitution: Required[str]
    principles: int | str
    seed: int
    aggregator: Aggregator
    per_principle: bool
    calibrated: bool
    mode: Mode
    cot_max_tokens: int | None
    ensemble: Ensemble
    ensemble_delta: float


# The defaults of every option but `constitution`, in the order requests send them.
OPTION_DEFAULTS: dict[str, Any] = {
    "principles": "all",
    "seed": 0,
    "aggregator": "mean_logodds",
    "per_principle": False,
    "calibrated": False,
    "mode": "plain",
    "cot_max_tokens": None,
    "ensemble": "full",
    "ensemble_delta": 0.1,
}


def label_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every labeling option, defaults filled in (also what a resumed file is checked
    against). `**options` accepts any name at run time, so a misspelt one is refused here
    as a keyword argument would have been."""
    unknown = sorted(set(given) - {"constitution", *OPTION_DEFAULTS})
    if unknown:
        known = ", ".join(["constitution", *OPTION_DEFAULTS])
        raise TypeError(f"unexpected labeling option(s) {unknown}; the options are: {known}")
    if "constitution" not in given:
        raise TypeError("missing the labeling option 'constitution'")
    return {
        "constitution": given["constitution"],
        **{name: given.get(name, default) for name, default in OPTION_DEFAULTS.items()},
    }


def label_body(pairs: Iterable[PairInput], options: dict[str, Any]) -> dict[str, Any]:
    return {"pairs": [as_dict(p) for p in pairs], **wire_options(options)}


def spec_body(spec: ConstitutionSpec | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec, ConstitutionSpec):
        return spec.model_dump(mode="json", exclude_none=True)
    return spec


def check_sizes(chunk_size: int, concurrency: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")


# ---- one chunk ----------------------------------------------------------------------------

ChunkOutcome = tuple[list[LabelResult], Usage]


@dataclass(frozen=True)
class Halves:
    """Send these two instead of the refused chunk, first then second."""

    first: Chunk
    second: Chunk


def after_refusal(error: APIStatusError, chunk: Chunk) -> Halves | ChunkOutcome:
    """What to do when the server refuses a whole chunk: halve it when its size was the
    reason; report a single pair refused as a request in its place; else re-raise (an
    error about an option, auth or availability is the caller's)."""
    if is_splittable(error, chunk):
        half = len(chunk) // 2
        return Halves(chunk[:half], chunk[half:])
    if error.status_code in (413, 422) and error.param == "pairs":
        return chunk_error(error, chunk), Usage()
    raise error


def answered(answer: LabelResponse, chunk: Chunk) -> ChunkOutcome:
    """A chunk's answer, its per-item errors numbered by their place in the dataset."""
    return renumber(answer.labels, chunk), answer.usage


def joined(first: ChunkOutcome, second: ChunkOutcome) -> ChunkOutcome:
    """The two halves of a chunk, back in one piece, in order."""
    usage = first[1].model_copy()
    usage.add(second[1])
    return first[0] + second[0], usage


# ---- a whole dataset ----------------------------------------------------------------------


@dataclass
class DatasetRun:
    """One pass over a dataset, everything but the sending: the chunks to send, in order;
    the counts, usage and progress as each chunk's outcome arrives; and where each result
    goes (the resumable output file, `summary.results`, or only the caller's loop)."""

    options: dict[str, Any]
    indexed: Iterator[IndexedPair]
    chunk_size: int
    concurrency: int
    summary: DatasetSummary
    progress: Progress
    sink: IO[str] | None = field(default=None)
    resume: ResumeCheck | None = field(default=None)

    @classmethod
    def start(
        cls,
        pairs: Iterable[PairInput],
        options: Mapping[str, Any],
        *,
        chunk_size: int,
        concurrency: int,
        progress: bool | None,
        total: int | None,
        summary: DatasetSummary | None = None,
        output: str | Path | None = None,
        keep: bool = False,
    ) -> "DatasetRun":
        """Check the sizes and options; with `output`, open it after the pairs it already
        holds (consuming them from the input, checked one by one); with `keep` and no
        output, collect the results in `summary.results`."""
        check_sizes(chunk_size, concurrency)
        summary = summary if summary is not None else DatasetSummary()
        full = label_options(options)
        indexed: Iterator[IndexedPair] = enumerate(as_dict(p) for p in pairs)
        sink = None
        resume = None
        if output is not None:
            summary.output = Path(output)
            sink, resume = open_resumable(summary.output, indexed, full, summary)
        elif keep:
            summary.results = []
        size = total if total is not None else length_hint(pairs)
        bar = Progress(progress, size, summary.resumed, "labeling")
        return cls(full, indexed, chunk_size, concurrency, summary, bar, sink, resume)

    def chunks(self) -> Iterator[Chunk]:
        return chunked(self.indexed, self.chunk_size)

    def finished(self, outcome: ChunkOutcome) -> list[LabelResult]:
        """Count the oldest chunk's results (they leave in input order)."""
        results, usage = outcome
        self.summary.usage.add(usage)
        for result in results:
            self.summary.record(result)
        self.progress.update(len(results), self.summary.failed)
        return results

    def keep(self, result: LabelResult) -> None:
        if self.sink is not None:
            if self.resume is not None:
                if isinstance(result, Label):
                    # Raises before the line is written: the file keeps one judge's labels.
                    self.resume.check(result)
                self.resume.lines += 1
            self.sink.write(result_line(result))
        elif self.summary.results is not None:
            self.summary.results.append(result)

    def close(self) -> None:
        if self.sink is not None:
            fsync_close(self.sink)


# ---- jobs ---------------------------------------------------------------------------------


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def check_deadline(job: Job, deadline: float | None, timeout: float | None) -> None:
    """Raise TimeoutError with the job's last status once `wait` is past its deadline."""
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(
            f"job {job.id} still {job.state} after {timeout} s ({job.done + job.failed} of "
            f"{job.total} pairs); wait again, or cancel_job({job.id!r})"
        )


def results_over(job: Job, cursor: int) -> bool:
    """After an empty results page from `cursor`, with `job` as read before that page:
    True when nothing more will come (a failed or cancelled job stopped short of it), False
    while the job runs (ask again after the poll interval).

    A job whose every pair has a result (all `succeeded*` jobs, and a `failed` one whose
    pairs all failed) answers a page at any cursor below its total, so an empty one means
    the results are gone: JobResultsGone, rather than asking again for ever.
    """
    if not job.finished:
        return False
    if job.done + job.failed >= job.total:
        raise JobResultsGone(job.id, job.state, cursor, job.total)
    return True
