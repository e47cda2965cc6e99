"""Groups and items in, rewards out: the data contract of the rewards path (DESIGN.md §9).

An empty completion is a legitimate policy output (a GRPO policy early in training emits
many: 13 of 32 in a TRL trial), so here, unlike in a labeling request, a completion may
be empty: it is judged, rendered as an empty quoted line ("> "), never refused. Refusing it
turned each such pair into a silent tie, and an empty answer got zero advantage instead of
the penalty the judge gives it. `RewardPair` carries that rule into the one labeling
pipeline: it is a `Pair`, so the pipeline takes it as already validated.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cai_judge.labeling.schema import (
    MAX_TEXT_CHARS,
    ChatPrompt,
    ConstitutionRef,
    Pair,
    PairId,
    TemplateRef,
)

# A completion may be empty (see the module docstring); as long as any response otherwise.
Completion = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
# A prompt is checked as a pair's is (labeling/schema.py, `ChatPrompt`).
Prompt = ChatPrompt
# An exploit reason's name (labeling/exploits.py `ExploitReason`: "empty",
# "punctuation-only", "master-key", "addresses-evaluator"); a plain string here because
# exploits.py reaches this module through probes.py.
ExploitReasonName = str
# The most completions one group may hold: GRPO uses 4–64; round robin grows as G².
MAX_GROUP_SIZE = 64


class RewardPair(Pair):
    """A Pair whose responses may be empty: only the rewards path builds these."""

    response_a: Completion
    response_b: Completion


class RewardGroup(BaseModel):
    """Group mode: the completions of one prompt, judged against each other."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: PairId
    prompt: Prompt
    completions: Annotated[list[Completion], Field(min_length=2, max_length=MAX_GROUP_SIZE)]


class RewardItem(BaseModel):
    """Reference mode: one completion against a reference response to the same prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: PairId
    prompt: Prompt
    completion: Completion
    reference: Completion


class RewardProvenance(BaseModel):
    """What a reward depends on, as a label names it (§2): model, template and constitution
    versions, the principles selected, the seed and the aggregator, and the calibration
    profile when one made the labels under it."""

    model: str
    constitution: ConstitutionRef
    template: TemplateRef
    principles: list[str]
    seed: int
    aggregator: str
    calibration_profile: str | None = Field(
        default=None,
        description="`calibrated: true` only: the sha256 of the calibration profile whose "
        "margins (length-debiased, m − β̄·log(tokens_a/tokens_b), then scaled by its 1/T) the "
        "rewards were computed from; absent otherwise.",
    )


class MatchDetail(BaseModel):
    """One match of one completion, from its side: the opponent (an index in the group, or
    "reference"), its outcome (P(this completion ≻ opponent)), margin and consistency."""

    opponent: int | Literal["reference"]
    outcome: float
    margin: float
    consistency: float


class CompletionDetail(BaseModel):
    """`detail: true`: a completion's matches, mean margin (nats, from its side) and mean
    consistency (the share of principles on which both orders agreed)."""

    matches: list[MatchDetail]
    mean_margin: float
    consistency: float
    raw_reward: float | None = Field(
        default=None,
        description="`exploits: floor` only: the reward as judged, before a flagged "
        "completion was floored; absent otherwise.",
    )


class GroupRewards(BaseModel):
    """A group's rewards. The optional fields are set only when they say something, so a
    wire that leaves out None (`response_model_exclude_none`) shows the old shape:
    `converged` with `scoring: bradley_terry` (False: the fit hit its iteration cap and the
    strengths are its last iterate), `low_confidence` when any match's label was
    low-confidence (per completion, how many of its matches were), `exploits` when any
    completion looks like a judge exploit (per completion, its reasons; labeling/exploits.py)."""

    id: str
    rewards: list[float]
    provenance: RewardProvenance
    detail: list[CompletionDetail] | None = None
    converged: bool | None = None
    low_confidence: list[int] | None = None
    exploits: list[list[ExploitReasonName]] | None = None


class ItemReward(BaseModel):
    """`low_confidence`: True when the label under the reward was low-confidence (little
    answer mass on the answer letters); `exploits`: the completion's reasons to look like a
    judge exploit (labeling/exploits.py); each absent otherwise."""

    id: str
    reward: float
    provenance: RewardProvenance
    detail: CompletionDetail | None = None
    low_confidence: bool | None = None
    exploits: list[ExploitReasonName] | None = None
