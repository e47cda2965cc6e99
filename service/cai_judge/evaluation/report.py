"""From judge runs to reports: which metric of which protocol on which pairs.

Pure: a `JudgeRun` in, a pydantic report out (written by `render`). Every number in a
report is computed over the same pairs for every protocol, and in a comparison over the
pairs both sides scored, so differences are never differences in the gold subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from cai_judge.constants import DEFAULT_SEED
from cai_judge.evaluation.calibration_fit import CalibratedComparison
from cai_judge.evaluation.gold import GoldPreference
from cai_judge.evaluation.metrics import (
    Calibration,
    Estimate,
    LengthBias,
    MassSummary,
    Verdict,
    agreement_scores,
    calibration,
    estimate,
    grouped_estimates,
    length_bias,
    mass_summary,
    per_principle_agreement,
)
from cai_judge.evaluation.protocols import (
    PROTOCOL_DESCRIPTIONS,
    Protocol,
    ProtocolLabel,
    derive,
    principle_verdicts,
)
from cai_judge.evaluation.runner import JudgeRun, ScoredPair
from cai_judge.labeling.schema import ConstitutionRef, PairError, Usage

REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class MetricOptions:
    n_bins: int = 10
    n_resamples: int = 2000
    confidence: float = 0.95
    # Seeds both the bootstrap and single-order's coin, so a report is reproducible.
    seed: int = DEFAULT_SEED


class MetricSettings(BaseModel):
    n_bins: int
    n_resamples: int
    confidence: float
    seed: int
    length_unit: Literal["characters"] = "characters"


class ProtocolReport(BaseModel):
    protocol: Protocol
    description: str
    pairs: int
    agreement: Estimate | None = Field(description="argmax vs gold; a tie counts ½")
    agreement_when_consistent: Estimate | None = Field(
        description="agreement on the pairs whose principles all agree across both orders"
    )
    consistent_share: float | None = Field(description="share of pairs with consistency == 1")
    ties: int
    position_consistency: float | None
    position_bias: float | None
    calibration: Calibration | None
    length_bias: LengthBias = Field(description="P(this protocol prefers the longer response)")
    answer_mass: MassSummary
    per_category: dict[str, Estimate]
    agreement_shorter_wins: Estimate | None = Field(
        default=None, description="agreement on the pairs where gold prefers the shorter response"
    )
    agreement_longer_wins: Estimate | None = Field(
        default=None, description="agreement on the pairs where gold prefers the longer response"
    )


class PrincipleReport(BaseModel):
    principle: str
    agreement: Estimate
    consistency: float
    position_bias: float
    answer_mass_mean: float


class PairVerdict(BaseModel):
    preferred: Verdict
    p_a: float


class PairReport(BaseModel):
    id: str
    category: str | None
    gold: GoldPreference
    gold_p_a: float | None
    longer: Literal["a", "b"] | None
    verdicts: dict[Protocol, PairVerdict]


class GoldSummary(BaseModel):
    path: str
    pairs: int
    scored: int
    errors: list[PairError]
    categories: dict[str, int]
    prefers_longer: LengthBias = Field(description="P(gold prefers the longer response)")


class JudgeInfo(BaseModel):
    model: str
    constitution: ConstitutionRef
    principles: list[str]
    seed: int


class EvalReport(BaseModel):
    schema_version: int = REPORT_SCHEMA_VERSION
    gold: GoldSummary
    judge: JudgeInfo
    metrics: MetricSettings
    usage: Usage
    protocols: dict[Protocol, ProtocolReport]
    per_principle: list[PrincipleReport]
    pairs: list[PairReport]
    calibrated: CalibratedComparison | None = Field(
        default=None, description="with --calibration: the profile's labels beside the raw ones"
    )


class SideInfo(BaseModel):
    name: str
    judge: JudgeInfo
    errors: list[PairError]
    report: ProtocolReport


class Disagreement(BaseModel):
    id: str
    category: str | None
    gold: GoldPreference
    note: str | None
    a: PairVerdict
    b: PairVerdict


class CompareReport(BaseModel):
    schema_version: int = REPORT_SCHEMA_VERSION
    gold_path: str
    gold_pairs: int
    protocol: Protocol
    compared: int = Field(description="pairs scored by both sides; every number uses these")
    excluded: list[str] = Field(description="ids scored by one side only, left out of both")
    gold_prefers_longer: LengthBias = Field(description="on the compared pairs")
    metrics: MetricSettings
    a: SideInfo
    b: SideInfo
    agreement_difference: Estimate | None = Field(
        description="agreement of a minus b, with a paired bootstrap interval"
    )
    verdicts_differ: int
    disagreements: list[Disagreement]


def _settings(options: MetricOptions) -> MetricSettings:
    return MetricSettings(
        n_bins=options.n_bins,
        n_resamples=options.n_resamples,
        confidence=options.confidence,
        seed=options.seed,
    )


def _estimate(values: Sequence[float] | np.ndarray, options: MetricOptions) -> Estimate | None:
    return estimate(
        values, confidence=options.confidence, n_resamples=options.n_resamples, seed=options.seed
    )


def _lengths(scored: Sequence[ScoredPair]) -> tuple[list[int], list[int]]:
    return (
        [len(s.gold.response_a) for s in scored],
        [len(s.gold.response_b) for s in scored],
    )


def _gold_verdicts(scored: Sequence[ScoredPair]) -> list[Verdict]:
    return [s.gold.preferred for s in scored]


def protocol_report(
    protocol: Protocol,
    scored: Sequence[ScoredPair],
    labels: Sequence[ProtocolLabel],
    low_mass_threshold: float,
    options: MetricOptions,
) -> ProtocolReport:
    """Every metric of one protocol's labels against the gold of the same pairs."""
    if [s.gold.id for s in scored] != [label.pair_id for label in labels]:
        raise ValueError("labels and gold pairs are not in the same order")
    gold = _gold_verdicts(scored)
    verdicts: list[Verdict] = [label.preferred for label in labels]
    scores = agreement_scores(verdicts, gold)
    halves = np.array([_gold_half(s) for s in scored], dtype=object)
    consistent = np.array([label.consistency == 1.0 for label in labels], dtype=bool)
    length_a, length_b = _lengths(scored)
    has_pairs = bool(labels)
    return ProtocolReport(
        protocol=protocol,
        description=PROTOCOL_DESCRIPTIONS[protocol],
        pairs=len(labels),
        agreement=_estimate(scores, options),
        agreement_when_consistent=_estimate(scores[consistent], options),
        consistent_share=float(consistent.mean()) if has_pairs else None,
        ties=sum(1 for v in verdicts if v == "tie"),
        position_consistency=(
            float(np.mean([label.consistency for label in labels])) if has_pairs else None
        ),
        position_bias=(
            float(np.mean([label.position_bias for label in labels])) if has_pairs else None
        ),
        calibration=(
            calibration(
                [label.p_a for label in labels], [s.gold.target for s in scored], options.n_bins
            )
            if has_pairs
            else None
        ),
        length_bias=length_bias(verdicts, length_a, length_b),
        answer_mass=mass_summary([label.answer_mass for label in labels], low_mass_threshold),
        per_category=grouped_estimates(
            scores,
            [s.gold.category for s in scored],
            confidence=options.confidence,
            n_resamples=options.n_resamples,
            seed=options.seed,
        ),
        agreement_shorter_wins=_estimate(scores[halves == "shorter"], options),
        agreement_longer_wins=_estimate(scores[halves == "longer"], options),
    )


def _judge_info(run: JudgeRun) -> JudgeInfo:
    return JudgeInfo(
        model=run.model,
        constitution=ConstitutionRef(id=run.constitution.id, version=run.constitution.version),
        principles=run.constitution.principle_ids,
        seed=run.seed,
    )


def _longer(scored: ScoredPair) -> Literal["a", "b"] | None:
    la, lb = len(scored.gold.response_a), len(scored.gold.response_b)
    if la == lb:
        return None
    return "a" if la > lb else "b"


def _gold_half(scored: ScoredPair) -> Literal["shorter", "longer"] | None:
    """Whether gold prefers the shorter or the longer response (characters, as every length
    in this report); None for equal lengths. A judge that only scores length agrees on one
    half and disagrees on the other, which a single agreement number hides."""
    longer = _longer(scored)
    if longer is None:
        return None
    return "longer" if scored.gold.preferred == longer else "shorter"


def per_principle_report(
    scored: Sequence[ScoredPair], options: MetricOptions
) -> list[PrincipleReport]:
    if not scored:
        return []
    pairs = [s.scores for s in scored]
    agreement = per_principle_agreement(
        principle_verdicts(pairs),
        _gold_verdicts(scored),
        confidence=options.confidence,
        n_resamples=options.n_resamples,
        seed=options.seed,
    )
    reports = []
    for index, (principle, found) in enumerate(agreement.items()):
        numbers = [p.principles[index] for p in pairs]
        reports.append(
            PrincipleReport(
                principle=principle,
                agreement=found,
                consistency=float(np.mean([1.0 if b.agree else 0.0 for b in numbers])),
                position_bias=float(np.mean([b.bias for b in numbers])),
                answer_mass_mean=float(np.mean([b.answer_mass for b in numbers])),
            )
        )
    return reports


def evaluate(
    run: JudgeRun,
    protocols: Sequence[Protocol],
    gold_path: str,
    gold_pairs: int,
    options: MetricOptions | None = None,
) -> EvalReport:
    """The full report of one judge run under the given protocols."""
    options = options or MetricOptions()
    scored = run.scored
    labels = {p: derive(p, [s.scores for s in scored], options.seed) for p in protocols}
    length_a, length_b = _lengths(scored)
    categories: dict[str, int] = {}
    for s in scored:
        if s.gold.category is not None:
            categories[s.gold.category] = categories.get(s.gold.category, 0) + 1
    return EvalReport(
        gold=GoldSummary(
            path=gold_path,
            pairs=gold_pairs,
            scored=len(scored),
            errors=list(run.errors),
            categories=dict(sorted(categories.items())),
            prefers_longer=length_bias(_gold_verdicts(scored), length_a, length_b),
        ),
        judge=_judge_info(run),
        metrics=_settings(options),
        usage=run.usage,
        protocols={
            p: protocol_report(p, scored, labels[p], run.low_mass_threshold, options)
            for p in protocols
        },
        per_principle=per_principle_report(scored, options),
        pairs=[
            PairReport(
                id=s.gold.id,
                category=s.gold.category,
                gold=s.gold.preferred,
                gold_p_a=s.gold.p_a,
                longer=_longer(s),
                verdicts={
                    p: PairVerdict(preferred=labels[p][i].preferred, p_a=labels[p][i].p_a)
                    for p in protocols
                },
            )
            for i, s in enumerate(scored)
        ],
    )


def compare(
    run_a: JudgeRun,
    run_b: JudgeRun,
    protocol: Protocol,
    gold_path: str,
    gold_pairs: int,
    options: MetricOptions | None = None,
    names: tuple[str, str] | None = None,
) -> CompareReport:
    """Two judge runs over the same gold, on the pairs both scored."""
    options = options or MetricOptions()
    ids_b = {s.gold.id for s in run_b.scored}
    both = [s for s in run_a.scored if s.gold.id in ids_b]
    common = {s.gold.id for s in both}
    by_id_b = {s.gold.id: s for s in run_b.scored}
    scored_b = [by_id_b[s.gold.id] for s in both]
    labels_a = derive(protocol, [s.scores for s in both], options.seed)
    labels_b = derive(protocol, [s.scores for s in scored_b], options.seed)
    gold = _gold_verdicts(both)
    difference = agreement_scores([x.preferred for x in labels_a], gold) - agreement_scores(
        [x.preferred for x in labels_b], gold
    )
    disagreements = [
        Disagreement(
            id=s.gold.id,
            category=s.gold.category,
            gold=s.gold.preferred,
            note=s.gold.note,
            a=PairVerdict(preferred=la.preferred, p_a=la.p_a),
            b=PairVerdict(preferred=lb.preferred, p_a=lb.p_a),
        )
        for s, la, lb in zip(both, labels_a, labels_b, strict=True)
        if la.preferred != lb.preferred
    ]
    name_a, name_b = names or (run_a.label_name, run_b.label_name)

    def side(
        name: str, run: JudgeRun, scored: list[ScoredPair], labels: list[ProtocolLabel]
    ) -> SideInfo:
        return SideInfo(
            name=name,
            judge=_judge_info(run),
            errors=list(run.errors),
            report=protocol_report(protocol, scored, labels, run.low_mass_threshold, options),
        )

    return CompareReport(
        gold_path=gold_path,
        gold_pairs=gold_pairs,
        protocol=protocol,
        compared=len(both),
        excluded=sorted({s.gold.id for s in (*run_a.scored, *run_b.scored)} - common),
        gold_prefers_longer=length_bias(gold, *_lengths(both)),
        metrics=_settings(options),
        a=side(name_a, run_a, both, labels_a),
        b=side(name_b, run_b, scored_b, labels_b),
        agreement_difference=_estimate(difference, options),
        verdicts_differ=len(disagreements),
        disagreements=disagreements,
    )
