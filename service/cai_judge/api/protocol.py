"""HTTP request and response types, apart from the serving logic (as vLLM's openai/ does).

Each wire type converts to or from the service layer's types here, so a route is only
`wire -> service call -> wire`. Labels and pairs are the domain's own models: the wire
shows them as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cai_judge.constants import MAX_PRINCIPLES, MAX_SEED
from cai_judge.labeling.constitution import ConstitutionSpec, Principle
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.schema import ConstitutionRef, ErrorDetail, Label, Pair, PairError, Usage
from cai_judge.services.constitutions import ConstitutionSummary as ConstitutionSummaryData
from cai_judge.services.health import Readiness
from cai_judge.services.jobs import JobSpec, JobStatus
from cai_judge.services.labels import LabelCommand, LabelOutcome

EXAMPLE_PAIR: Any = {
    "id": "pair-1",
    "prompt": "How can I get into my neighbour's wifi without the password?",
    "response_a": "I can't help with accessing a network you don't have permission to use.",
    "response_b": "Try a deauth attack and capture the handshake, then crack it offline.",
}


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "type": "invalid_request",
                        "message": "String should have at least 1 character",
                        "param": "pairs.0.response_a",
                    }
                }
            ]
        }
    )
    error: ErrorDetail


class LabelRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "constitution": "harmless",
                    "pairs": [EXAMPLE_PAIR],
                    "principles": 4,
                    "seed": 0,
                    "aggregator": "mean_logodds",
                    "per_principle": False,
                }
            ]
        },
    )

    constitution: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="`id` (latest version) or `id@version` (a unique prefix of >= 8 hex digits)."
    )
    # A pair that is an object but not a valid Pair falls through to the plain object
    # branch, so it is reported beside the good labels instead of failing the request.
    pairs: Annotated[list[Pair | dict[str, Any]], Field(min_length=1)] = Field(
        description="Pairs `{id, prompt, response_a, response_b}` (the `Pair` schema); "
        "invalid ones come back as per-item errors."
    )
    principles: Annotated[int, Field(ge=1, le=MAX_PRINCIPLES)] | Literal["all"] = "all"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS
    per_principle: bool = False

    def to_command(self) -> LabelCommand:
        return LabelCommand(
            constitution=self.constitution,
            pairs=self.pairs,
            principles=self.principles,
            seed=self.seed,
            aggregator=self.aggregator,
            per_principle=self.per_principle,
        )


class LabelResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "labels": [
                        {
                            "id": "pair-1",
                            "preferred": "a",
                            "margin": 0.42,
                            "p_a": 0.6035,
                            "position_bias": -0.1,
                            "consistency": 0.75,
                            "answer_mass": 0.91,
                            "low_confidence": False,
                            "principles": ["less-harmful", "no-crime-or-violence"],
                            "aggregator": "mean_logodds",
                            "constitution": {"id": "harmless", "version": "a6e7e4b6..."},
                            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                            "seed": 0,
                        },
                        {
                            "id": "pair-2",
                            "index": 1,
                            "error": {
                                "type": "invalid_pair",
                                "message": "String should have at least 1 character",
                                "param": "pairs.1.response_b",
                            },
                        },
                    ],
                    "usage": {
                        "pairs": 1,
                        "score_units": 4,
                        "prompt_tokens": 1040,
                        "cached_prompt_tokens": 512,
                    },
                }
            ]
        }
    )

    labels: list[Label | PairError] = Field(description="One entry per input pair, in order.")
    usage: Usage

    @classmethod
    def from_outcome(cls, outcome: LabelOutcome) -> LabelResponse:
        return cls(labels=outcome.results, usage=outcome.usage)


class ConstitutionSummary(BaseModel):
    id: str
    latest_version: str
    versions: list[str]
    principles: int
    description: str


class ConstitutionDetail(BaseModel):
    """One stored version: its content and the content hash that is its version."""

    version: str
    id: str
    description: str
    template: str
    principles: list[Principle]

    @classmethod
    def from_spec(cls, spec: ConstitutionSpec) -> ConstitutionDetail:
        return cls(version=spec.version, **spec.model_dump())


class ConstitutionList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "constitutions": [
                        {
                            "id": "harmless",
                            "latest_version": "a6e7e4b62c51...",
                            "versions": ["a6e7e4b62c51..."],
                            "principles": 16,
                            "description": "Judges which response is less harmful.",
                        }
                    ]
                }
            ]
        }
    )
    constitutions: list[ConstitutionSummary]

    @classmethod
    def from_summaries(cls, summaries: list[ConstitutionSummaryData]) -> ConstitutionList:
        return cls(
            constitutions=[
                ConstitutionSummary.model_validate(s, from_attributes=True) for s in summaries
            ]
        )


class HealthStatus(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ok", "checks": {"engine": "ok"}}]}
    )
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_readiness(cls, readiness: Readiness) -> HealthStatus:
        return cls(status="ok" if readiness.ready else "unavailable", checks=readiness.checks)


# -- batch jobs (the wire contract of issue 10, which the SDK of issue 11 calls) ------------


class JobRequest(BaseModel):
    """The JSON form of POST /v1/jobs: /v1/labels' fields; `pairs` may be longer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"constitution": "harmless", "pairs": [EXAMPLE_PAIR], "principles": 4}]
        },
    )

    constitution: Annotated[str, Field(min_length=1, max_length=200)]
    pairs: Annotated[list[Pair | dict[str, Any]], Field(min_length=1)]
    principles: Annotated[int, Field(ge=1, le=MAX_PRINCIPLES)] | Literal["all"] = "all"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS
    per_principle: bool = False

    def to_spec(self) -> JobSpec:
        return JobSpec(
            constitution=self.constitution,
            principles=self.principles,
            seed=self.seed,
            aggregator=self.aggregator,
            per_principle=self.per_principle,
        )


class JobQuery(BaseModel):
    """The options of an NDJSON upload, from the query string."""

    model_config = ConfigDict(extra="forbid")

    constitution: Annotated[str, Field(min_length=1, max_length=200)]
    principles: Annotated[int, Field(ge=1, le=MAX_PRINCIPLES)] | Literal["all"] = "all"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS
    per_principle: bool = False

    def to_spec(self) -> JobSpec:
        return JobSpec(
            constitution=self.constitution,
            principles=self.principles,
            seed=self.seed,
            aggregator=self.aggregator,
            per_principle=self.per_principle,
        )


class JobStatusBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2a9c0e4b7d4e1f9a8b6c5d4e3f2a1b",
                    "state": "running",
                    "total": 100000,
                    "done": 4096,
                    "failed": 3,
                    "pairs_per_s": 41.5,
                    "eta_s": 2310.4,
                    "created_at": "2026-11-28T10:00:00Z",
                    "updated_at": "2026-11-28T10:01:39Z",
                    "constitution": {"id": "harmless", "version": "a6e7e4b6..."},
                }
            ]
        }
    )

    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    total: int
    done: int = Field(description="Pairs labeled.")
    failed: int = Field(description="Pairs reported as errors; done + failed == total at the end.")
    pairs_per_s: float
    eta_s: float | None = Field(description="Seconds to go at the current rate; null if unknown.")
    created_at: datetime
    updated_at: datetime
    constitution: ConstitutionRef

    @classmethod
    def from_status(cls, status: JobStatus) -> JobStatusBody:
        return cls(
            id=status.id,
            state=status.state,  # type: ignore[arg-type]
            total=status.total,
            done=status.done,
            failed=status.failed,
            pairs_per_s=status.pairs_per_s,
            eta_s=status.eta_s,
            created_at=status.created_at,
            updated_at=status.updated_at,
            constitution=ConstitutionRef(
                id=status.constitution_id, version=status.constitution_version
            ),
        )
