"""Batch jobs on the wire (`/v1/jobs`, docs/DESIGN.md §5): a job's status and a page of
the caller's jobs. A job's results are label results (types/labels.py), one per pair."""

from __future__ import annotations

from typing import Literal, TypeAlias

from cai_judge_client.types.shared import ConstitutionRef, _Model

__all__ = ["TERMINAL_JOB_STATES", "Job", "JobList", "JobState"]

JobState: TypeAlias = Literal[
    "queued", "running", "succeeded", "succeeded_with_errors", "failed", "cancelled"
]
TERMINAL_JOB_STATES: frozenset[str] = frozenset(
    {"succeeded", "succeeded_with_errors", "failed", "cancelled"}
)


class Job(_Model):
    """A batch job's status (`JobStatusBody` on the wire, from `GET /v1/jobs/{id}`).
    It ends when done + failed == total: `succeeded` with no failed pair, `failed` with
    no labeled one, `succeeded_with_errors` between; or `cancelled`."""

    id: str
    state: JobState
    total: int
    done: int
    failed: int
    pairs_per_s: float
    eta_s: float | None
    created_at: str
    updated_at: str
    constitution: ConstitutionRef

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_JOB_STATES


class JobList(_Model):
    """`GET /v1/jobs`: the caller's jobs, newest first; `next_cursor` None on the last page."""

    jobs: list[Job]
    next_cursor: int | None = None
