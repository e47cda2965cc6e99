"""Labels on the wire (`POST /v1/labels`, docs/DESIGN.md §2): the request, one result per
pair (a Label or a PairError in its place) and the usage.

These are copies, not imports: the SDK never imports `cai_judge`, so it installs without
torch or vLLM. A contract test (tests/api/test_sdk_contract.py) compares every model under
`cai_judge_client.types` with the service's OpenAPI schema (field names and which are
required), so the two cannot drift apart.

Response models accept fields they do not know (`extra="allow"`): a newer server may add
fields without breaking an older client.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, Field

from cai_judge_client.types.shared import ConstitutionRef, ErrorDetail, TemplateRef, _Model

__all__ = [
    "TRANSIENT_ERROR_TYPES",
    "Aggregator",
    "ChatMessage",
    "Ensemble",
    "EnsembleProvenance",
    "Label",
    "LabelCalibration",
    "LabelRequest",
    "LabelResponse",
    "LabelResult",
    "Mode",
    "Pair",
    "PairError",
    "PairInput",
    "PrincipleResult",
    "Rationale",
    "Usage",
    "parse_result",
]

Aggregator: TypeAlias = Literal["mean_logodds", "mean_prob"]
Mode: TypeAlias = Literal["plain", "cot"]
Ensemble: TypeAlias = Literal["full", "adaptive"]
# Per-pair error types a later attempt may not meet (the judge's engine was unreachable):
# `label_dataset` labels such a pair again when it resumes.
TRANSIENT_ERROR_TYPES: frozenset[str] = frozenset({"engine_unavailable"})


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Pair(BaseModel):
    """`{id, prompt, response_a, response_b}`; `prompt` is a string or chat messages.

    Calls also take plain dicts: the server validates each pair and reports a bad one in its
    place (a `PairError`) while labeling the rest.
    """

    id: str
    prompt: str | list[ChatMessage]
    response_a: str
    response_b: str


PairInput: TypeAlias = Pair | dict[str, Any]


class LabelRequest(BaseModel):
    """The body of `POST /v1/labels` (and the JSON form of `POST /v1/jobs`)."""

    constitution: str
    pairs: list[dict[str, Any]]
    principles: int | Literal["all"] = "all"
    seed: int = 0
    aggregator: Aggregator = "mean_logodds"
    per_principle: bool = False
    calibrated: bool = False
    mode: Mode = "plain"
    cot_max_tokens: int | None = None
    ensemble: Ensemble = "full"
    ensemble_delta: float = 0.1


class PrincipleResult(_Model):
    principle: str
    s_ab: float
    s_ba: float
    margin: float
    position_bias: float
    agree: bool
    answer_mass: float
    # CoT mode: the numbers above are clamped; these are the judge's own, unclamped.
    raw_s_ab: float | None = None
    raw_s_ba: float | None = None
    raw_margin: float | None = None


class LabelCalibration(_Model):
    """A calibrated label's provenance: the profile's sha256 and the judge's own numbers."""

    profile: str
    raw_margin: float
    raw_p_a: float


class Rationale(_Model):
    """CoT mode: what the judge wrote for one principle before answering, in each order
    (`ab`: response_a shown as option (A); `ba`: response_b there)."""

    principle: str
    ab: str
    ba: str


class EnsembleProvenance(_Model):
    """What an adaptive ensemble did: the rule and δ, the round it stopped after, the
    principles scored (the label's `principles`) of those selected, and the score units."""

    mode: Literal["adaptive"] = "adaptive"
    rule: str
    delta: float
    clip: float
    round: int
    rounds: int
    scored: int
    selected: int
    score_units: int
    decided: Literal["a", "b"] | None = None
    certain: bool = False


class Label(_Model):
    """One pair's label. `margin`: log-odds, in nats, that response_a is better, debiased
    over both orders; `p_a = σ(margin)`, the soft label for the Bradley–Terry loss.

    `calibration` is set on a `calibrated=True` label: `margin`, `p_a` and `preferred` then
    come from the server's calibration profile, and the judge's own numbers are kept there.
    `mode == "cot"` marks a chain-of-thought label: `margin`, `p_a` and `preferred` are the
    clamped numbers (train on these), `raw_margin`/`raw_p_a` the unclamped ones, and
    `rationales` what the judge wrote.
    """

    id: str
    preferred: Literal["a", "b", "tie"]
    margin: float
    p_a: float
    position_bias: float
    consistency: float
    answer_mass: float
    low_confidence: bool
    principles: list[str]
    selection: int | Literal["all"]
    aggregator: Aggregator
    constitution: ConstitutionRef
    template: TemplateRef
    model: str
    seed: int
    per_principle: list[PrincipleResult] | None = None
    calibration: LabelCalibration | None = None
    mode: Literal["cot"] | None = None
    raw_margin: float | None = None
    raw_p_a: float | None = None
    cot_max_probability: float | None = None
    cot_max_tokens: int | None = None
    rationales: list[Rationale] | None = None
    # Adaptive ensembles only (`ensemble="adaptive"`).
    ensemble: EnsembleProvenance | None = None


class PairError(_Model):
    """In place of a label: this pair could not be labeled (the rest of the batch was).
    `index` is the pair's position in the request, or in the dataset for `label_dataset`."""

    id: str | None = None  # absent when the pair had no usable id
    index: int
    error: ErrorDetail


LabelResult: TypeAlias = Label | PairError


def parse_result(data: dict[str, Any]) -> LabelResult:
    """A Label or, when the entry carries `error`, a PairError."""
    if "error" in data:
        return PairError.model_validate(data)
    return Label.model_validate(data)


class Usage(_Model):
    pairs: int = 0
    score_units: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    # Of `score_units`, those the server's label cache answered with no engine work.
    cached_score_units: int = 0

    def add(self, other: Usage) -> None:
        self.pairs += other.pairs
        self.score_units += other.score_units
        self.prompt_tokens += other.prompt_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.cached_score_units += other.cached_score_units


class LabelResponse(_Model):
    labels: list[LabelResult] = Field(description="One entry per input pair, in order.")
    usage: Usage

    @property
    def errors(self) -> list[PairError]:
        return [r for r in self.labels if isinstance(r, PairError)]
