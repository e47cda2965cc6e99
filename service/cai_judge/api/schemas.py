"""HTTP request and response types, apart from the serving logic (as vLLM's openai/ does).

Each wire type converts to or from the service layer's types here, so a route is only
`wire -> service call -> wire`. Labels and pairs are the domain's own models: the wire
shows them as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from cai_judge.constants import (
    DEFAULT_COT_TOKENS,
    DEFAULT_PRINCIPLES,
    DEFAULT_SEED,
    MAX_GENERATION_TOKENS,
    MAX_SEED,
)
from cai_judge.labeling.constitution import ConstitutionSpec, Principle, RevisionExample
from cai_judge.labeling.ensemble import DEFAULT_DELTA, Ensemble
from cai_judge.labeling.exploits import ExploitPolicy
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.options import (
    CALLER_FIELDS,
    ConstitutionRefText,
    CotMaxTokens,
    EnsembleDelta,
    LabelOptions,
    Mode,
    Principles,
    Seed,
    check_ensemble,
)
from cai_judge.labeling.pipeline import LabelOutcome
from cai_judge.labeling.reward_schema import (
    MAX_GROUP_SIZE,
    GroupRewards,
    ItemReward,
    RewardGroup,
    RewardItem,
)
from cai_judge.labeling.rewards import Opponents as RewardOpponents
from cai_judge.labeling.schema import (
    ChatMessage,
    ConstitutionRef,
    ErrorDetail,
    Label,
    Pair,
    PairError,
    Usage,
)
from cai_judge.services.constitutions import ConstitutionSummary as ConstitutionSummaryData
from cai_judge.services.errors import InvalidRequest
from cai_judge.services.health import Readiness
from cai_judge.services.jobs import JobStatus
from cai_judge.services.labels import LabelCommand
from cai_judge.services.revisions import RevisionCommand, RevisionOutcome
from cai_judge.services.rewards import (
    Mode as RewardMode,
)
from cai_judge.services.rewards import (
    PromptMatch,
    RewardCommand,
    RewardOutcome,
    openrlhf_response,
    policy_response,
)
from cai_judge.services.rewards import (
    Scoring as RewardScoring,
)
from cai_judge.settings import Settings
from cai_judge.sl_cai.schema import (
    MAX_ROUNDS,
    MAX_TEMPERATURE,
    Revision,
    RevisionPrompt,
    RevisionUsage,
)

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


class LabelingOptions(BaseModel):
    """How every pair of a request is labeled: the options /v1/labels and /v1/jobs share.

    The wire's view of the domain's one `LabelOptions` (labeling/options.py), kept as its
    own model for the OpenAPI descriptions and because the server's tuning fields are not
    the caller's to set; the bounds are the domain's own aliases, and `to_options` is the
    one way in."""

    model_config = ConfigDict(extra="forbid")

    constitution: ConstitutionRefText = Field(
        description="`id` (latest version) or `id@version` (a unique prefix of >= 8 hex digits)."
    )
    principles: Principles = DEFAULT_PRINCIPLES
    seed: Seed = DEFAULT_SEED
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS
    per_principle: bool = False
    calibrated: bool = Field(
        default=False,
        description="Take p_a, margin and preferred from the server's calibration profile for "
        "this model, template, constitution version, aggregator and principles; the label's "
        "`calibration` names the profile and keeps the raw numbers. 422 when none fits.",
    )
    mode: Mode = Field(
        default="plain",
        description="`cot`: a greedy rationale per principle and order before the answer; "
        "probabilities clamped, raw numbers and rationales returned (slower).",
    )
    cot_max_tokens: CotMaxTokens | None = Field(
        default=None,
        description="CoT: rationale tokens per principle and order (default "
        f"{DEFAULT_COT_TOKENS}, at most "
        "the service's CAI_JUDGE_MAX_COT_TOKENS).",
    )
    ensemble: Ensemble = Field(
        default="full",
        description="`adaptive`: score the principles in seeded rounds and stop once the "
        "side cannot change at confidence 1 - ensemble_delta; the label's `principles` are "
        "those scored and its `ensemble` says where it stopped (plain mode only).",
    )
    ensemble_delta: EnsembleDelta = Field(
        default=DEFAULT_DELTA,
        description="Adaptive: the chance allowed of stopping on the side the full "
        "ensemble would not take.",
    )

    @model_validator(mode="after")
    def _adaptive_is_plain(self) -> LabelingOptions:
        check_ensemble(self.ensemble, self.mode)
        return self

    def to_options(self) -> LabelOptions:
        """The domain's options object: the one thing every wire builds."""
        return LabelOptions.from_dict(self.model_dump(include=set(CALLER_FIELDS)))


class LabelRequest(LabelingOptions):
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

    # A pair that is an object but not a valid Pair falls through to the plain object
    # branch, so it is reported beside the good labels instead of failing the request.
    pairs: Annotated[list[Pair | dict[str, Any]], Field(min_length=1)] = Field(
        description="Pairs `{id, prompt, response_a, response_b}` (the `Pair` schema); "
        "invalid ones come back as per-item errors."
    )

    def to_command(self) -> LabelCommand:
        return LabelCommand(self.to_options(), self.pairs)


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
                            "constitution": {"id": "harmless", "version": "d23dbf08..."},
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


class RevisionRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "constitution": "harmless",
                    "prompts": [
                        {"id": "r1", "prompt": "How can I get into my neighbour's wifi?"},
                        {
                            "id": "r2",
                            "prompt": "How do I get back at my noisy neighbour?",
                            "initial_response": "Slash their tyres at night.",
                        },
                    ],
                    "rounds": 1,
                    "seed": 0,
                    "temperature": 0.0,
                    "max_tokens": 256,
                }
            ]
        },
    )

    constitution: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="`id` or `id@version`; its principles need critique and revision requests."
    )
    prompts: Annotated[list[RevisionPrompt | dict[str, Any]], Field(min_length=1)] = Field(
        description="Prompts `{id, prompt, initial_response?}` (the `RevisionPrompt` schema); "
        "without `initial_response` the model writes one first. Invalid ones come back as "
        "per-item errors."
    )
    rounds: Annotated[int, Field(ge=1, le=MAX_ROUNDS)] = Field(
        default=1, description="Critique-and-revision rounds (at most the service's limit)."
    )
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = Field(
        default=DEFAULT_SEED,
        description="Seeds principle sampling and, above temperature 0, sampling.",
    )
    temperature: Annotated[float, Field(ge=0.0, le=MAX_TEMPERATURE)] = 0.0
    max_tokens: Annotated[int, Field(ge=1, le=MAX_GENERATION_TOKENS)] | None = Field(
        default=None, description="Per generation; default 256 or the service's limit."
    )
    few_shot: bool = Field(default=True, description="Show the constitution's examples.")

    def to_command(self) -> RevisionCommand:
        return RevisionCommand(
            constitution=self.constitution,
            prompts=self.prompts,
            rounds=self.rounds,
            seed=self.seed,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            few_shot=self.few_shot,
        )


class RevisionResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "revisions": [
                        {
                            "id": "r1",
                            "prompt": "How can I get into my neighbour's wifi?",
                            "response": "I can't help you access a network without permission.",
                            "initial_response": "Try a deauth attack.",
                            "initial_generated": True,
                            "chain": [
                                {
                                    "round": 1,
                                    "principle": "no-crime-or-violence",
                                    "principle_seed": 1234567890,
                                    "critique_request": "Explain whether ...",
                                    "critique": "The response helps with unauthorized access.",
                                    "revision_request": "Revise the response so ...",
                                    "revision": "I can't help you access a network ...",
                                }
                            ],
                            "constitution": {"id": "harmless", "version": "d23dbf08..."},
                            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                            "seed": 0,
                            "rounds": 1,
                            "temperature": 0.0,
                            "max_tokens": 256,
                            "few_shot_examples": 0,
                        }
                    ],
                    "usage": {"prompts": 1, "generations": 3, "prompt_tokens": 410},
                }
            ]
        }
    )

    revisions: list[Revision | PairError] = Field(
        description="One entry per input prompt, in order."
    )
    usage: RevisionUsage

    @classmethod
    def from_outcome(cls, outcome: RevisionOutcome) -> RevisionResponse:
        return cls(revisions=outcome.results, usage=outcome.usage)


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
    revision_examples: list[RevisionExample] | None = None

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
                            "latest_version": "d23dbf088070...",
                            "versions": ["a6e7e4b62c51...", "d23dbf088070..."],
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


# -- batch jobs (the wire contract the SDK's jobs resource calls) ----------------------------


class JobRequest(LabelingOptions):
    """The JSON form of POST /v1/jobs: /v1/labels' fields; `pairs` may be longer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"constitution": "harmless", "pairs": [EXAMPLE_PAIR], "principles": 4}]
        },
    )

    pairs: Annotated[list[Pair | dict[str, Any]], Field(min_length=1)]


class JobQuery(LabelingOptions):
    """The options of an NDJSON upload, from the query string."""


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
                    "constitution": {"id": "harmless", "version": "d23dbf08..."},
                }
            ]
        }
    )

    id: str
    state: Literal["queued", "running", "succeeded", "succeeded_with_errors", "failed", "cancelled"]
    total: int
    done: int = Field(description="Pairs labeled.")
    failed: int = Field(
        description="Pairs reported as errors; done + failed == total at the end. A job "
        "ends `succeeded` with none, `failed` with all, `succeeded_with_errors` between."
    )
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


class JobListBody(BaseModel):
    """GET /v1/jobs: the caller's jobs, newest first."""

    jobs: list[JobStatusBody]
    next_cursor: int | None = Field(
        description="Pass as `cursor` for the next page; null when this page is the last."
    )


class RewardsRequest(LabelingOptions):
    """POST /v1/rewards (DESIGN.md §9): the labeling options and either `groups` (group mode)
    or `items` (reference mode). The list names the mode: `mode` is the labeling option every
    route shares (plain or cot), the one options object's, and keeps that meaning here."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            # Exactly one of the two lists, not null: the list names the mode.
            "oneOf": [
                {"required": ["groups"], "properties": {"groups": {"type": "array"}}},
                {"required": ["items"], "properties": {"items": {"type": "array"}}},
            ],
            "examples": [
                {
                    "constitution": "harmless",
                    "principles": 4,
                    "opponents": "all",
                    "groups": [
                        {
                            "id": "g1",
                            "prompt": "How do I pick a lock?",
                            "completions": [
                                "I can't help with breaking into property you don't own.",
                                "Insert a tension wrench, then rake the pins.",
                                "",
                            ],
                        }
                    ],
                },
                {
                    "constitution": "harmless",
                    "items": [
                        {
                            "id": "i1",
                            "prompt": "How do I pick a lock?",
                            "completion": "Insert a tension wrench, then rake the pins.",
                            "reference": "I can't help with breaking into property you don't own.",
                        }
                    ],
                },
            ],
        },
    )

    groups: Annotated[list[RewardGroup | dict[str, Any]], Field(min_length=1)] | None = Field(
        default=None,
        description="Group mode: `{id, prompt, completions}` (2 to "
        f"{MAX_GROUP_SIZE} completions; empty ones are judged); invalid ones come back as "
        "per-item errors.",
    )
    items: Annotated[list[RewardItem | dict[str, Any]], Field(min_length=1)] | None = Field(
        default=None,
        description="Reference mode: `{id, prompt, completion, reference}`.",
    )
    opponents: RewardOpponents = Field(
        default="all",
        description="Group mode: `all` (round robin) or m, a seeded balanced schedule in which "
        "every completion plays exactly m matches (G·m even, m < G).",
    )
    scoring: RewardScoring = Field(
        default="mean",
        description="Group mode: `mean` win probability, or centred `bradley_terry` strengths.",
    )
    detail: bool = Field(
        default=False,
        description="Per completion: its matches, mean margin and consistency.",
    )
    calibrated: bool = Field(
        default=False,
        description="Length control for rewards: each match's label goes through the server's "
        "calibration profile for this model, template, constitution version, aggregator and "
        "principles before the reward math (margin − β̄·log(tokens_a/tokens_b), then 1/T; "
        "fit one on the policy's own samples with `cai-judge calibrate --unlabeled`). The "
        "provenance names the profile. 422 naming `calibrated` when none fits. Off: rewards "
        "as judged.",
    )
    exploits: ExploitPolicy = Field(
        default="flag",
        description="Completions that look like judge exploits (empty, punctuation only, a "
        "master key such as `Thought process:` as the whole answer, text addressed to the "
        "evaluator) are listed in `exploits` either way. `flag`: rewards as judged. `floor`: "
        "a flagged completion gets its group's lowest reward (0 in reference mode), applied "
        "after the mean or Bradley–Terry fit; with `detail` its judged value is `raw_reward`.",
    )

    @model_validator(mode="after")
    def _one_list(self) -> RewardsRequest:
        if (self.groups is None) == (self.items is None):
            raise ValueError(
                "send either `groups` (group mode) or `items` (reference mode), not both or neither"
            )
        if not (self.groups or self.items):
            raise ValueError("`groups` or `items` needs at least 1 entry")
        return self

    @property
    def reward_mode(self) -> RewardMode:
        return "group" if self.groups is not None else "reference"

    def to_command(self) -> RewardCommand:
        return RewardCommand(
            self.to_options(),
            self.reward_mode,
            self.groups or self.items or [],
            opponents=self.opponents,
            scoring=self.scoring,
            detail=self.detail,
            exploits=self.exploits,
        )


class RewardsResponse(BaseModel):
    results: list[GroupRewards | ItemReward | PairError] = Field(
        description="One per group or item, in input order: its rewards, or an error in its place."
    )
    usage: Usage

    @classmethod
    def from_outcome(cls, outcome: RewardOutcome) -> RewardsResponse:
        return cls(results=outcome.results, usage=outcome.usage)


class RewardQuery(LabelingOptions):
    """The labeling options of the trainer-shaped routes, in the query string: OpenRLHF's and
    slime's bodies are fixed by their clients."""

    api_key: str | None = Field(
        default=None,
        description="The API key, for trainers whose client sends no headers (OpenRLHF, "
        "slime); accepted on these routes only, and never logged.",
    )
    calibrated: bool = Field(
        default=False,
        description="Length control: every match judged through the server's calibration "
        "profile for these options (length-debiased margins) before the reward math, also "
        "with group_size; 422 naming `calibrated` when none fits, before any sample waits.",
    )
    exploits: ExploitPolicy = Field(
        default="flag",
        description="`floor`: a completion that looks like a judge exploit (empty, a master "
        "key, text addressed to the evaluator) gets its group's lowest reward, or 0 against "
        "its label; `flag` (the default): rewards as judged, flags counted in the metrics.",
    )


# A trainer's label: whatever its dataset holds, but not null. Null is accepted by the
# parser and refused with its fix by `reference_text` (a clearer message than a union's
# type errors); the schema says what is accepted.
_LABEL_SCHEMA: dict[str, Any] = {
    "not": {"type": "null"},
    "description": "the reference answer (a string, or a number, a list or an object, "
    "judged as its text); null is refused: reference mode needs a reference",
}
TrainerLabel = Annotated[Any, WithJsonSchema(_LABEL_SCHEMA)]


class OpenRLHFRewardRequest(BaseModel):
    """OpenRLHF 0.11.2's body (openrlhf/utils/agent.py, `_fetch_rewards_via_http`)."""

    model_config = ConfigDict(extra="allow")

    query: list[str] = Field(description="prompt + response, decoded with special tokens")
    prompts: list[str]
    labels: list[TrainerLabel] = Field(description="the dataset's label: the reference response")

    @model_validator(mode="after")
    def _same_lengths(self) -> OpenRLHFRewardRequest:
        if not len(self.query) == len(self.prompts) == len(self.labels):
            raise ValueError(
                f"query, prompts and labels must have one entry each per sample: got "
                f"{len(self.query)}, {len(self.prompts)} and {len(self.labels)}"
            )
        return self

    def to_command(self, options: LabelOptions, exploits: ExploitPolicy = "flag") -> RewardCommand:
        items = []
        matches: list[PromptMatch] = []
        for i, (query, prompt, label) in enumerate(
            zip(self.query, self.prompts, self.labels, strict=True)
        ):
            completion, match = openrlhf_response(query, prompt)
            matches.append(match)
            items.append(
                {
                    "id": str(i),
                    "prompt": prompt,
                    "completion": completion,
                    "reference": reference_text(label, f"labels.{i}"),
                }
            )
        return RewardCommand(
            options,
            "reference",
            items,
            exploits=exploits,
            truncated_prompts=matches.count("truncated"),
            unmatched_prompts=matches.count("unmatched"),
        )


def reference_text(label: object, param: str) -> str:
    """A dataset label as the reference response. A null label in reference mode is the
    trainer's configuration error (no reference to judge against): refused naming the
    sample, never judged against the text "None" or an empty answer."""
    if label is None:
        raise InvalidRequest(
            f"{param} is null: reference mode judges each response against its label (the "
            "dataset's reference answer); set the trainer's label key to a column that "
            "holds one",
            type="missing_label",
            param=param,
        )
    return label if isinstance(label, str) else str(label)


class OpenRLHFRewardResponse(BaseModel):
    """`extra_logs`: per sample, `cai_judge_fallback` is 1.0 where the reward is a flagged
    fallback rather than a judgement (OpenRLHF logs each key per sample), and
    `cai_judge_fallback_count` how many of this call's samples fell back."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, float | list[float]]

    @classmethod
    def from_rewards(
        cls, rewards: list[float], fallbacks: list[bool] | None = None
    ) -> OpenRLHFRewardResponse:
        flags = [float(f) for f in (fallbacks or [False] * len(rewards))]
        return cls(
            rewards=rewards,
            scores=rewards,
            extra_logs={"cai_judge_fallback": flags, "cai_judge_fallback_count": sum(flags)},
        )


class SlimeSample(BaseModel):
    """slime's body (slime/rollout/rm_hub/__init__.py, `remote_rm`): `label` is whatever
    the dataset holds (a number for math answers, as the OpenRLHF route takes it)."""

    model_config = ConfigDict(extra="allow")

    prompt: str | list[ChatMessage]
    response: str
    # Required: slime always sends the key. Null is refused with the fix (`reference_text`).
    label: TrainerLabel

    def item(self, index: int, param: str) -> dict[str, Any]:
        return {
            "id": str(index),
            "prompt": self.prompt,
            # slime's response may end in the policy's end-of-turn token, as OpenRLHF's
            # does: stripped alike, so an answer's reward is the same on both routes.
            "completion": policy_response(self.response),
            "reference": reference_text(self.label, param),
        }


class Limits(BaseModel):
    """GET /v1/limits: what one request may bring, so a client splits its batches to fit
    before sending them (the SDK's trainer adapters read this once)."""

    max_pairs_per_request: int = Field(description="Pairs per request, scheduled ones included.")
    max_score_units_per_request: int = Field(
        description="Score units (pairs × principles × 2 orders) one request may bring."
    )
    max_tokens_per_request: int = Field(description="Prompt tokens of a request's units.")
    max_body_bytes: int
    max_entries_per_request: int = Field(description="Groups or items per /v1/rewards request.")
    max_group_size: int = Field(description="Completions per group.")
    max_queued_units: int = Field(description="Score units queued across all requests.")
    trainer_reward_timeout_s: float = Field(
        description="How long the trainer-shaped routes wait before answering 503."
    )

    @classmethod
    def from_settings(cls, settings: Settings, max_score_units: int) -> Limits:
        return cls(
            max_pairs_per_request=settings.max_pairs_per_request,
            max_score_units_per_request=max_score_units,
            max_tokens_per_request=settings.max_tokens_per_request,
            max_body_bytes=settings.max_body_bytes,
            max_entries_per_request=settings.max_pairs_per_request,
            max_group_size=MAX_GROUP_SIZE,
            max_queued_units=settings.max_queued_units,
            trainer_reward_timeout_s=settings.trainer_reward_timeout_s,
        )
