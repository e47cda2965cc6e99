"""Typed results of `POST /v1/rewards` (docs/DESIGN.md §9), mirroring the service's wire.

Copies, not imports, like types/labels.py: the SDK never imports `cai_judge`. One result per
group (group mode) or item (reference mode), in input order, or an error in its place.
Response models accept fields they do not know, so a newer server can add some.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from cai_judge_client.types.shared import ConstitutionRef, ErrorDetail, TemplateRef, _Model

__all__ = [
    "CompletionDetail",
    "ExploitPolicy",
    "GroupRewards",
    "ItemReward",
    "Opponents",
    "RewardError",
    "RewardMode",
    "RewardProvenance",
    "RewardResult",
    "RewardsResponse",
    "Scoring",
    "parse_reward_result",
]

RewardMode: TypeAlias = Literal["group", "reference"]
Scoring: TypeAlias = Literal["mean", "bradley_terry"]
Opponents: TypeAlias = int | Literal["all"]
# `floor`: a completion that looks like a judge exploit gets its group's lowest reward.
ExploitPolicy: TypeAlias = Literal["flag", "floor"]


class RewardProvenance(_Model):
    """What a reward depends on, like a label's: the same versions make the same rewards."""

    model: str
    constitution: ConstitutionRef
    template: TemplateRef
    principles: list[str]
    seed: int
    aggregator: str
    # `calibrated: true` only: the sha256 of the calibration profile the labels went through.
    calibration_profile: str | None = None


class CompletionDetail(_Model):
    """`detail: true`: one completion's matches (opponent index, or "reference", and its
    outcome), its mean margin in nats and mean consistency across its matches."""

    matches: list[dict[str, Any]]
    mean_margin: float
    consistency: float
    # `exploits: floor` only: the reward as judged, before a flagged completion was floored.
    raw_reward: float | None = None


class GroupRewards(_Model):
    """A group's rewards. The optional fields are present only when they say something:
    `converged` with `scoring="bradley_terry"`, `low_confidence` (per completion, how many
    of its matches were low-confidence), `exploits` (per completion, why it looks like a
    judge exploit)."""

    id: str
    rewards: list[float]
    provenance: RewardProvenance | None = None
    detail: list[CompletionDetail] | None = None
    converged: bool | None = None
    low_confidence: list[int] | None = None
    exploits: list[list[str]] | None = None


class ItemReward(_Model):
    id: str
    reward: float
    provenance: RewardProvenance | None = None
    detail: CompletionDetail | None = None
    low_confidence: bool | None = None
    exploits: list[str] | None = None


class RewardError(_Model):
    """In place of a result: this group or item could not be judged (the rest were)."""

    id: str | None = None
    index: int
    error: ErrorDetail


RewardResult: TypeAlias = GroupRewards | ItemReward | RewardError


def parse_reward_result(data: dict[str, Any]) -> RewardResult:
    if "error" in data:
        return RewardError.model_validate(data)
    if "rewards" in data:
        return GroupRewards.model_validate(data)
    return ItemReward.model_validate(data)


class RewardsResponse(_Model):
    results: list[RewardResult]
    usage: dict[str, Any]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> RewardsResponse:
        return cls(
            results=[parse_reward_result(r) for r in data.get("results", [])],
            usage=dict(data.get("usage", {})),
        )
