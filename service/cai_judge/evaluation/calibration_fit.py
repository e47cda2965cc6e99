"""Fitting a calibration profile, and measuring it honestly: pure.

The model is labeling/calibration_profile.py's `p_a = σ(w·(m − β̄_S·L))`, fitted in two steps:
β per principle from the judge's margins alone (a slope through the origin: no labels, so
any pairs will do), then w on gold after debiasing, by damped Newton on the log loss with a
small ridge (scipy is not a dependency; the objective is strictly convex). A negative w is
refused unless `--allow-reversal`. Every number a report shows is cross-validated by
groups of pairs, β included.

The reasoning at length: docs/internals.md, section "evaluation/calibration_fit.py".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from cai_judge.constants import DEFAULT_PRINCIPLES, DEFAULT_SEED
from cai_judge.evaluation.metrics import (
    Calibration,
    Estimate,
    FloatArray,
    LengthBias,
    Verdict,
    agreement_scores,
    calibration,
    estimate,
    length_bias,
)
from cai_judge.evaluation.protocols import PairScores
from cai_judge.evaluation.runner import JudgeRun, PairsRun
from cai_judge.labeling.calibration_profile import (
    CalibrationProfile,
    CalibrationTerms,
    log_length_ratio,
    terms_logit,
)
from cai_judge.labeling.constitution import ConstitutionSpec
from cai_judge.labeling.label_math import (
    Aggregator,
    aggregate_margin,
    preferred_from_margin,
    select_principles,
    selection_seed,
    sigmoid,
)
from cai_judge.labeling.reward_schema import RewardGroup
from cai_judge.labeling.schema import Pair, PairError

# Below this many scored gold pairs a fit is refused: k-fold cross-validation would train
# on ~24 pairs, and the reported before/after numbers would be mostly noise.
MIN_GOLD_PAIRS = 30
DEFAULT_FOLDS = 5
# Weight of ½·Σ weight² added to the summed log loss: negligible next to 30+ pairs' loss,
# enough to keep the Hessian positive definite and the weights finite on separable data.
DEFAULT_RIDGE = 1e-3
_NEWTON_MAX_STEPS = 100
_GRADIENT_TOLERANCE = 1e-10


@dataclass(frozen=True, slots=True)
class CalibrationSample:
    """One scored gold pair, as the label the service would serve for it."""

    pair_id: str
    # Pairs with the same prompt (prompt_group): cross-validation keeps them in one fold.
    group: str
    margin: float
    tokens_a: int
    tokens_b: int
    target: float
    gold: Literal["a", "b"]
    # The principles the label used (constitution order), as `Label.principles`.
    principles: tuple[str, ...] = ("p",)
    # Every principle's own margin (constitution order), for estimating β; empty means
    # one principle whose margin is the label's.
    principle_margins: tuple[tuple[str, float], ...] = ()

    @property
    def length_feature(self) -> float:
        return log_length_ratio(self.tokens_a, self.tokens_b)

    @property
    def every_principle(self) -> tuple[tuple[str, float], ...]:
        return self.principle_margins or ((self.principles[0], self.margin),)


@dataclass(frozen=True, slots=True)
class LengthSample:
    """One scored pair with no gold: what estimating β, and showing its effect, needs."""

    pair_id: str
    group: str
    margin: float
    tokens_a: int
    tokens_b: int
    principles: tuple[str, ...]
    principle_margins: tuple[tuple[str, float], ...]

    @property
    def length_feature(self) -> float:
        return log_length_ratio(self.tokens_a, self.tokens_b)

    @property
    def every_principle(self) -> tuple[tuple[str, float], ...]:
        return self.principle_margins


class Scored(Protocol):
    """What β estimation and debiasing read from a sample, gold or not."""

    @property
    def margin(self) -> float: ...
    @property
    def principles(self) -> tuple[str, ...]: ...
    @property
    def length_feature(self) -> float: ...
    @property
    def every_principle(self) -> tuple[tuple[str, float], ...]: ...


@dataclass(frozen=True, slots=True)
class FitSpec:
    length_control: bool = False
    allow_reversal: bool = False
    ridge: float = DEFAULT_RIDGE
    # β estimated elsewhere (`--unlabeled`): used as is, never refitted on gold folds.
    fixed_sensitivity: Mapping[str, float] | None = None

    @property
    def debiases(self) -> bool:
        return self.length_control or self.fixed_sensitivity is not None


@dataclass(frozen=True, slots=True)
class FitResult:
    terms: CalibrationTerms
    # The unconstrained optimum of w: negative means the margin points away from gold.
    unconstrained_inverse_temperature: float
    steps: int
    allow_reversal: bool = False

    @property
    def direction_rejected(self) -> bool:
        """The margin points away from gold and reversing it was not allowed."""
        return self.unconstrained_inverse_temperature < 0 and not self.allow_reversal


# -- samples ---------------------------------------------------------------------------


def prompt_group(pair: Pair) -> str:
    """The cross-validation group of a pair: its prompt (a chat prompt as the canonical
    JSON of its messages), so that every pair of one prompt, a pair's swap and copies of it
    included, falls in one fold.

    Pairs that share a prompt share much of what the judge reads, so a fold fitted with
    some of them and scored on the others would measure a fit on what it saw: the
    cross-validated figures would leak.
    """
    material: list[object] = (
        ["text", pair.prompt]
        if isinstance(pair.prompt, str)
        else ["chat", [m.model_dump() for m in pair.prompt]]
    )
    canonical = json.dumps(material, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _label_numbers(
    pair: Pair,
    scores: PairScores,
    spec: ConstitutionSpec,
    run_seed: int,
    aggregator: Aggregator,
    selection: int | Literal["all"],
) -> tuple[float, tuple[str, ...], tuple[tuple[str, float], ...]]:
    """The label's margin and principles, as `/v1/labels` would return them for `principles`
    = selection and the run's seed, and every principle's own margin under `aggregator`."""
    by_id = {b.principle_id: b for b in scores.principles}
    k = None if selection == "all" else selection
    seed = selection_seed(
        pair.prompt_key(), pair.response_a, pair.response_b, spec.version, run_seed
    )
    chosen = select_principles(spec.principle_ids, k, seed)
    margin = aggregate_margin([by_id[pid] for pid in chosen], aggregator)
    each = tuple((pid, aggregate_margin([by_id[pid]], aggregator)) for pid in spec.principle_ids)
    return margin, tuple(chosen), each


def calibration_samples(
    run: JudgeRun,
    token_counts: Mapping[str, tuple[int, int]],
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS,
    selection: int | Literal["all"] = DEFAULT_PRINCIPLES,
) -> list[CalibrationSample]:
    """Each scored pair's margin exactly as a label would carry it.

    `score_gold` scores every principle; a selection of k is redrawn per pair with the
    service's own seeded sampler (DESIGN.md §2), so the margins are those `/v1/labels` would
    return for `principles=k` and the run's seed.
    """
    samples = []
    for scored in run.scored:
        gold = scored.gold
        margin, chosen, each = _label_numbers(
            gold, scored.scores, run.constitution, run.seed, aggregator, selection
        )
        tokens_a, tokens_b = token_counts[gold.id]
        samples.append(
            CalibrationSample(
                pair_id=gold.id,
                group=prompt_group(gold),
                margin=margin,
                tokens_a=tokens_a,
                tokens_b=tokens_b,
                target=gold.target,
                gold=gold.preferred,
                principles=chosen,
                principle_margins=each,
            )
        )
    return samples


def length_samples(
    run: PairsRun,
    token_counts: Mapping[str, tuple[int, int]],
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS,
    selection: int | Literal["all"] = DEFAULT_PRINCIPLES,
) -> list[LengthSample]:
    """As `calibration_samples`, for pairs with no gold (`calibrate --unlabeled`)."""
    samples = []
    for pair, scores in run.scored:
        margin, chosen, each = _label_numbers(
            pair, scores, run.constitution, run.seed, aggregator, selection
        )
        tokens_a, tokens_b = token_counts[pair.id]
        samples.append(
            LengthSample(
                pair_id=pair.id,
                group=prompt_group(pair),
                margin=margin,
                tokens_a=tokens_a,
                tokens_b=tokens_b,
                principles=chosen,
                principle_margins=each,
            )
        )
    return samples


# -- β: the judge's own length sensitivity ---------------------------------------------


def estimate_length_sensitivity(samples: Sequence[Scored]) -> dict[str, float]:
    """β_i = Σ m_i·L / Σ L² per principle: the slope through the origin of each principle's
    margin on the log length ratio (module docstring). Reads no labels."""
    if not samples:
        raise ValueError("cannot estimate a length sensitivity on no pairs")
    ids = [pid for pid, _ in samples[0].every_principle]
    if any([pid for pid, _ in s.every_principle] != ids for s in samples):
        raise ValueError("pairs were scored on different principles")
    length = np.array([s.length_feature for s in samples], dtype=np.float64)
    spread = float(length @ length)
    if spread == 0.0:
        raise ValueError(
            "every pair's two responses have the same token count: length sensitivity "
            "cannot be estimated from them"
        )
    margins = np.array([[m for _, m in s.every_principle] for s in samples], dtype=np.float64)
    slopes = (length @ margins) / spread
    return {pid: float(slope) for pid, slope in zip(ids, slopes, strict=True)}


def group_pairs(group: RewardGroup) -> list[Pair]:
    """Every pair (i, j), i < j, of one prompt's sampled completions: what an RL run has to
    estimate β on (`calibrate --unlabeled` on a rewards-shaped file), the policy's own
    samples judged against each other as group rewards judge them.

    One orientation per pair is enough: the margin is antisymmetric and L odd, so a pair and
    its swap add the same m·L and L² to the slope. Left out: pairs with an empty completion
    (no Pair holds one; an empty answer is an exploit flag's business, not length's) and
    pairs of identical text (margin and L both 0, engine work for nothing). Ids are
    `GROUP:i-j`, the completions' indices in the group."""
    completions = group.completions
    return [
        Pair(
            id=f"{group.id}:{i}-{j}",
            prompt=group.prompt,
            response_a=completions[i],
            response_b=completions[j],
        )
        for i in range(len(completions))
        for j in range(i + 1, len(completions))
        if completions[i] and completions[j] and completions[i] != completions[j]
    ]


def pooled_length_sensitivity(samples: Sequence[Scored]) -> float:
    """The same slope for the label's own (aggregated) margin: one β for the ensemble."""
    length = np.array([s.length_feature for s in samples], dtype=np.float64)
    margins = np.array([s.margin for s in samples], dtype=np.float64)
    return float((length @ margins) / (length @ length))


def debiased_margins(
    samples: Sequence[Scored], sensitivity: Mapping[str, float] | None
) -> FloatArray:
    """m − β̄_S·L per sample, through the very function the service applies (w = 1)."""
    terms = CalibrationTerms(
        inverse_temperature=1.0,
        length_sensitivity=None if sensitivity is None else dict(sensitivity),
    )
    return predict_logits(terms, samples)


# -- the fit ---------------------------------------------------------------------------


def _objective(weights: FloatArray, x: FloatArray, y: FloatArray, ridge: float) -> float:
    z = x @ weights
    # y·log(1+e^−z) + (1−y)·log(1+e^z), overflow-free.
    loss = y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z)
    return float(loss.sum() + 0.5 * ridge * weights @ weights)


def _newton(x: FloatArray, y: FloatArray, ridge: float) -> tuple[FloatArray, int]:
    """Minimise the ridge-penalised log loss over every column of x."""
    weights = np.zeros(x.shape[1], dtype=np.float64)
    current = _objective(weights, x, y, ridge)
    for step in range(1, _NEWTON_MAX_STEPS + 1):
        z = x @ weights
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))
        gradient = x.T @ (p - y) + ridge * weights
        if float(np.max(np.abs(gradient))) < _GRADIENT_TOLERANCE:
            return weights, step - 1
        hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(x.shape[1])
        direction = np.linalg.solve(hessian, gradient)
        # Backtracking: a full Newton step can overshoot where the loss is far from
        # quadratic (large margins); halve it until the loss decreases enough (Armijo).
        length = 1.0
        while length > 1e-12:
            trial = weights - length * direction
            value = _objective(trial, x, y, ridge)
            if value <= current - 1e-4 * length * float(gradient @ direction):
                break
            length /= 2
        else:
            return weights, step
        weights, current = trial, value
    return weights, _NEWTON_MAX_STEPS


def fit_terms(samples: Sequence[CalibrationSample], spec: FitSpec) -> FitResult:
    """β (when the spec debiases) from the samples' margins, then w ≥ 0 (unless
    `spec.allow_reversal`) by maximum likelihood on the debiased margins."""
    if not samples:
        raise ValueError("cannot fit a calibration on no pairs")
    sensitivity: dict[str, float] | None = None
    if spec.fixed_sensitivity is not None:
        sensitivity = dict(spec.fixed_sensitivity)
    elif spec.length_control:
        sensitivity = estimate_length_sensitivity(samples)
    x = debiased_margins(samples, sensitivity)[:, None]
    y = np.array([s.target for s in samples], dtype=np.float64)
    weights, steps = _newton(x, y, spec.ridge)
    unconstrained_w = float(weights[0])
    # Strictly convex objective, one linear bound: when the free optimum violates it, the
    # bounded optimum lies on the bound, w = 0.
    w = 0.0 if unconstrained_w < 0 and not spec.allow_reversal else unconstrained_w
    return FitResult(
        terms=CalibrationTerms(inverse_temperature=w, length_sensitivity=sensitivity),
        unconstrained_inverse_temperature=unconstrained_w,
        steps=steps,
        allow_reversal=spec.allow_reversal,
    )


def predict_logits(terms: CalibrationTerms, samples: Sequence[Scored]) -> FloatArray:
    """Calibrated log-odds through the very function the service applies."""
    return np.array(
        [
            terms_logit(
                terms,
                s.margin,
                s.length_feature if terms.length_sensitivity is not None else 0.0,
                s.principles,
            )
            for s in samples
        ],
        dtype=np.float64,
    )


def probabilities(logits: FloatArray) -> FloatArray:
    return np.array([sigmoid(float(z)) for z in logits], dtype=np.float64)


# -- cross-validation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fold:
    index: int
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    terms: CalibrationTerms


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """Out-of-fold calibrated logits, in sample order, and how each fold was made."""

    logits: FloatArray
    fold_of: tuple[int, ...]
    folds: tuple[Fold, ...]


FitFunction = Callable[[Sequence[CalibrationSample], FitSpec], FitResult]


def assign_folds(samples: Sequence[CalibrationSample], folds: int, seed: int) -> list[int]:
    """A fold per sample, a group (a prompt's pairs) never straddling two folds.

    Groups are shuffled by `seed`, then placed largest first, each in the fold that holds
    the fewest pairs so far (the lowest such fold on a tie): folds differ in size by at
    most the largest group, and with groups of one pair this deals them round-robin.
    """
    sizes: dict[str, int] = {}
    for sample in samples:
        sizes[sample.group] = sizes.get(sample.group, 0) + 1
    groups = sorted(sizes)
    if folds < 2 or folds > len(groups):
        raise ValueError(f"folds must be from 2 to {len(groups)} (distinct prompts), got {folds}")
    shuffled = [groups[g] for g in np.random.default_rng(seed).permutation(len(groups))]
    # A stable sort: groups of one size keep their shuffled order.
    shuffled.sort(key=lambda group: -sizes[group])
    load = [0] * folds
    fold_of_group: dict[str, int] = {}
    for group in shuffled:
        fold = load.index(min(load))
        fold_of_group[group] = fold
        load[fold] += sizes[group]
    return [fold_of_group[s.group] for s in samples]


def cross_validate(
    samples: Sequence[CalibrationSample],
    spec: FitSpec,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
    fit: FitFunction = fit_terms,
) -> CrossValidation:
    """Score every sample with terms fitted on the other folds only."""
    fold_of = assign_folds(samples, folds, seed)
    logits = np.empty(len(samples), dtype=np.float64)
    records = []
    for k in range(folds):
        train = [s for s, f in zip(samples, fold_of, strict=True) if f != k]
        test_index = [i for i, f in enumerate(fold_of) if f == k]
        terms = fit(train, spec).terms
        logits[test_index] = predict_logits(terms, [samples[i] for i in test_index])
        records.append(
            Fold(
                index=k,
                train_ids=tuple(s.pair_id for s in train),
                test_ids=tuple(samples[i].pair_id for i in test_index),
                terms=terms,
            )
        )
    return CrossValidation(logits=logits, fold_of=tuple(fold_of), folds=tuple(records))


# -- the report ------------------------------------------------------------------------


class CalibrationMetrics(BaseModel):
    """One set of p_a against gold. Lengths are the responses' tokens, as in the length term."""

    log_loss: float = Field(description="mean −[y·log p + (1−y)·log(1−p)]")
    brier: float
    ece: float
    agreement: float = Field(description="argmax vs gold; a tie counts ½")
    prefers_longer: LengthBias = Field(description="P(the verdict picks the longer response)")
    reliability: Calibration


class LengthRow(BaseModel):
    """P(picks the longer response) of one set of verdicts, overall and where gold prefers
    the shorter response (gold's own is 0 there), with agreement on both halves."""

    name: str
    prefers_longer: LengthBias
    prefers_longer_when_shorter_wins: LengthBias
    agreement_shorter_wins: float | None
    agreement_longer_wins: float | None


class CalibrationPairRow(BaseModel):
    id: str
    gold: Verdict
    target: float
    fold: int
    tokens_a: int
    tokens_b: int
    raw_margin: float
    raw_p_a: float
    debiased_margin: float | None = Field(description="m − β̄·L, β from the other folds")
    cross_validated_p_a: float


class GoldInfo(BaseModel):
    path: str
    sha256: str
    pairs: int
    scored: int
    errors: list[PairError]


class LengthInfo(BaseModel):
    """β as fitted for the profile, beside one β for the label's aggregated margin."""

    source: Literal["gold", "unlabeled"]
    path: str
    sha256: str
    pairs: int
    scored: int
    errors: list[PairError]
    sensitivity: dict[str, float] = Field(description="β per principle, as in the profile")
    pooled_sensitivity: float = Field(
        description="the same slope for the label's aggregated margin, on the same pairs"
    )


class CalibrationReport(BaseModel):
    schema_version: int = 2
    gold: GoldInfo
    length: LengthInfo | None = Field(description="the length debiasing, when the profile has it")
    profile: CalibrationProfile
    temperature: float | None = Field(description="T = 1/w of the profile; null when w = 0")
    unconstrained_inverse_temperature: float
    folds: int
    seed: int
    n_bins: int
    gold_prefers_longer: LengthBias = Field(description="P(gold prefers the longer response)")
    raw: CalibrationMetrics = Field(description="the judge's own p_a = σ(margin)")
    debiased: CalibrationMetrics | None = Field(
        description="σ(m − β̄·L), no temperature, β cross-validated: the length control alone"
    )
    cross_validated: CalibrationMetrics = Field(
        description="the profile's form, each pair scored by a fit on the other folds"
    )
    cross_validated_temperature_only: CalibrationMetrics | None = Field(
        description="a temperature alone, cross-validated; shown beside a length-controlled fit"
    )
    in_sample: CalibrationMetrics = Field(
        description="the final profile on the pairs it was fitted on: optimistic, for reference"
    )
    length_rows: list[LengthRow] = Field(
        description="P(picks longer) of gold, raw and debiased, overall and on shorter-wins pairs"
    )
    brier_gain: Estimate | None = Field(
        description="raw minus cross-validated Brier, paired bootstrap; > 0 is better"
    )
    log_loss_gain: Estimate | None = Field(
        description="raw minus cross-validated log loss, paired bootstrap; > 0 is better"
    )
    fold_terms: list[CalibrationTerms]
    warnings: list[str]
    pairs: list[CalibrationPairRow]


class LengthOnlyReport(BaseModel):
    """`cai-judge calibrate --unlabeled` with no gold: β, and what it does to the verdicts."""

    schema_version: int = 2
    length: LengthInfo
    profile: CalibrationProfile
    raw_prefers_longer: LengthBias
    debiased_prefers_longer: LengthBias = Field(
        description="in sample: β was estimated on these pairs (without labels)"
    )


def _verdicts(logits: FloatArray) -> list[Verdict]:
    return [preferred_from_margin(float(z)) for z in logits]


def _pointwise_log_loss(p: FloatArray, y: FloatArray) -> FloatArray:
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    result: FloatArray = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    return result


def metrics_of(
    logits: FloatArray, samples: Sequence[CalibrationSample], n_bins: int
) -> CalibrationMetrics:
    p = probabilities(logits)
    y = np.array([s.target for s in samples], dtype=np.float64)
    found = calibration(p, y, n_bins)
    return CalibrationMetrics(
        log_loss=float(_pointwise_log_loss(p, y).mean()),
        brier=found.brier,
        ece=found.ece,
        agreement=float(agreement_scores(_verdicts(logits), [s.gold for s in samples]).mean()),
        prefers_longer=length_bias(
            _verdicts(logits), [s.tokens_a for s in samples], [s.tokens_b for s in samples]
        ),
        reliability=found,
    )


def shorter_wins(sample: CalibrationSample) -> bool | None:
    """Whether gold prefers the response with fewer tokens; None for equal lengths."""
    if sample.tokens_a == sample.tokens_b:
        return None
    return (sample.gold == "a") == (sample.tokens_a < sample.tokens_b)


def length_row(
    name: str, verdicts: Sequence[Verdict], samples: Sequence[CalibrationSample]
) -> LengthRow:
    halves = [shorter_wins(s) for s in samples]
    scores = agreement_scores(verdicts, [s.gold for s in samples])

    def mean_where(wanted: bool) -> float | None:
        chosen = [float(x) for x, h in zip(scores, halves, strict=True) if h is wanted]
        return sum(chosen) / len(chosen) if chosen else None

    shorter = [i for i, h in enumerate(halves) if h is True]
    return LengthRow(
        name=name,
        prefers_longer=length_bias(
            verdicts, [s.tokens_a for s in samples], [s.tokens_b for s in samples]
        ),
        prefers_longer_when_shorter_wins=length_bias(
            [verdicts[i] for i in shorter],
            [samples[i].tokens_a for i in shorter],
            [samples[i].tokens_b for i in shorter],
        ),
        agreement_shorter_wins=mean_where(True),
        agreement_longer_wins=mean_where(False),
    )


@dataclass(frozen=True, slots=True)
class CalibrationOutcome:
    report: CalibrationReport
    fit: FitResult

    @property
    def profile(self) -> CalibrationProfile:
        return self.report.profile


def _gain(raw: FloatArray, calibrated: FloatArray, n_resamples: int, seed: int) -> Estimate | None:
    return estimate(raw - calibrated, n_resamples=n_resamples, seed=seed)


def length_info(
    samples: Sequence[Scored],
    sensitivity: Mapping[str, float],
    *,
    source: Literal["gold", "unlabeled"],
    path: str,
    sha256: str,
    pairs: int,
    errors: Sequence[PairError] = (),
) -> LengthInfo:
    return LengthInfo(
        source=source,
        path=path,
        sha256=sha256,
        pairs=pairs,
        scored=len(samples),
        errors=list(errors),
        sensitivity=dict(sensitivity),
        pooled_sensitivity=pooled_length_sensitivity(samples),
    )


def build_report(
    samples: Sequence[CalibrationSample],
    spec: FitSpec,
    make_profile: Callable[[FitResult, CalibrationMetrics, CalibrationMetrics], CalibrationProfile],
    gold: GoldInfo,
    *,
    length: LengthInfo | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
    n_bins: int = 10,
    n_resamples: int = 2000,
) -> CalibrationOutcome:
    """Fit on every sample, cross-validate the same form, and measure both against raw.

    `make_profile(fit, raw, cross_validated)` names the profile (model, template, ...), which
    this pure function does not know. `length` describes where β came from (the caller
    knows the file); without it, and with a spec that debiases, it is the gold set's pairs.
    """
    if len(samples) < MIN_GOLD_PAIRS:
        raise ValueError(
            f"{len(samples)} scored gold pairs; a calibration needs at least {MIN_GOLD_PAIRS}"
        )
    y = np.array([s.target for s in samples], dtype=np.float64)
    raw_logits = np.array([s.margin for s in samples], dtype=np.float64)
    final = fit_terms(samples, spec)
    validated = cross_validate(samples, spec, folds, seed)
    raw = metrics_of(raw_logits, samples, n_bins)
    cross = metrics_of(validated.logits, samples, n_bins)
    temperature_only = debiased = None
    debiased_logits: FloatArray | None = None
    if spec.debiases:
        plain = FitSpec(allow_reversal=spec.allow_reversal, ridge=spec.ridge)
        temperature_only = metrics_of(
            cross_validate(samples, plain, folds, seed).logits, samples, n_bins
        )
        # The length control alone: each fold's β (w = 1), on the pairs it did not see.
        debiased_logits = np.empty(len(samples), dtype=np.float64)
        for fold in validated.folds:
            index = [i for i, f in enumerate(validated.fold_of) if f == fold.index]
            debiased_logits[index] = debiased_margins(
                [samples[i] for i in index], fold.terms.length_sensitivity
            )
        debiased = metrics_of(debiased_logits, samples, n_bins)
    profile = make_profile(final, raw, cross)
    in_sample = metrics_of(predict_logits(final.terms, samples), samples, n_bins)
    raw_p, cross_p = probabilities(raw_logits), probabilities(validated.logits)
    if spec.debiases and length is None:
        assert final.terms.length_sensitivity is not None
        length = length_info(
            samples, final.terms.length_sensitivity, source="gold", path=gold.path,
            sha256=gold.sha256, pairs=gold.pairs, errors=gold.errors,
        )  # fmt: skip

    warnings = []
    if final.direction_rejected:
        warnings.append(
            f"the judge's {'debiased ' if spec.debiases else ''}margin points away from gold "
            f"on this set (unconstrained 1/T = {final.unconstrained_inverse_temperature:.3f}): "
            f"it agrees with gold on {100 * (debiased or raw).agreement:.1f}% of pairs. No "
            "temperature can fix that; the profile is not written. Use a stronger judge or a "
            "constitution that fits the gold set, or --allow-reversal if a reversed judge is "
            "expected."
        )
    elif final.terms.reverses_judge:
        warnings.append(
            f"the profile REVERSES the judge (1/T = {final.terms.inverse_temperature:.3f}): "
            f"its margin points away from gold on this set (raw agreement "
            f"{100 * raw.agreement:.1f}%), and --allow-reversal let the fit turn it around"
        )
    if cross.ece >= raw.ece:
        warnings.append(
            f"cross-validated ECE does not improve ({raw.ece:.3f} raw, {cross.ece:.3f} "
            "calibrated): the profile may not help on new pairs; a larger gold set would tell"
        )
    length_rows = [
        length_row("gold", [s.gold for s in samples], samples),
        length_row("raw", _verdicts(raw_logits), samples),
    ]
    if debiased_logits is not None:
        length_rows.append(length_row("debiased", _verdicts(debiased_logits), samples))
    length_rows.append(length_row("calibrated", _verdicts(validated.logits), samples))
    report = CalibrationReport(
        gold=gold,
        length=length,
        profile=profile,
        temperature=profile.terms.temperature,
        unconstrained_inverse_temperature=final.unconstrained_inverse_temperature,
        folds=folds,
        seed=seed,
        n_bins=n_bins,
        gold_prefers_longer=length_bias(
            [s.gold for s in samples], [s.tokens_a for s in samples], [s.tokens_b for s in samples]
        ),
        raw=raw,
        debiased=debiased,
        cross_validated=cross,
        cross_validated_temperature_only=temperature_only,
        in_sample=in_sample,
        length_rows=length_rows,
        brier_gain=_gain((raw_p - y) ** 2, (cross_p - y) ** 2, n_resamples, seed),
        log_loss_gain=_gain(
            _pointwise_log_loss(raw_p, y), _pointwise_log_loss(cross_p, y), n_resamples, seed
        ),
        fold_terms=[f.terms for f in validated.folds],
        warnings=warnings,
        pairs=[
            CalibrationPairRow(
                id=s.pair_id,
                gold=s.gold,
                target=s.target,
                fold=validated.fold_of[i],
                tokens_a=s.tokens_a,
                tokens_b=s.tokens_b,
                raw_margin=s.margin,
                raw_p_a=float(raw_p[i]),
                debiased_margin=None if debiased_logits is None else float(debiased_logits[i]),
                cross_validated_p_a=float(cross_p[i]),
            )
            for i, s in enumerate(samples)
        ],
    )
    return CalibrationOutcome(report=report, fit=final)


def length_only_report(
    samples: Sequence[LengthSample], profile: CalibrationProfile, length: LengthInfo
) -> LengthOnlyReport:
    """What an unlabeled-only profile does to the verdicts on its own pairs."""
    tokens_a, tokens_b = [s.tokens_a for s in samples], [s.tokens_b for s in samples]
    raw = [preferred_from_margin(s.margin) for s in samples]
    debiased = _verdicts(debiased_margins(samples, profile.terms.length_sensitivity))
    return LengthOnlyReport(
        length=length,
        profile=profile,
        raw_prefers_longer=length_bias(raw, tokens_a, tokens_b),
        debiased_prefers_longer=length_bias(debiased, tokens_a, tokens_b),
    )


# -- `cai-judge eval --calibration` ------------------------------------------------------


class CalibratedComparison(BaseModel):
    """A profile's labels beside the raw ones on an eval's gold set."""

    profile: str
    temperature: float | None
    length_control: bool
    aggregator: Aggregator
    selection: int | Literal["all"]
    in_sample: bool = Field(
        description="this gold set is the one the profile was fitted on: calibrated numbers "
        "are in-sample; `cai-judge calibrate`'s report has the cross-validated ones"
    )
    gold_prefers_longer: LengthBias = Field(description="in tokens, as the length term")
    raw: CalibrationMetrics
    calibrated: CalibrationMetrics
    length_rows: list[LengthRow] = Field(
        description="gold, raw and calibrated: P(picks longer) and agreement per length half"
    )


def calibrated_comparison(
    run: JudgeRun,
    token_counts: Mapping[str, tuple[int, int]],
    profile: CalibrationProfile,
    gold_sha256: str,
    n_bins: int = 10,
) -> CalibratedComparison:
    """Raw and calibrated metrics of the profile's own labels (its aggregator and selection)."""
    samples = calibration_samples(run, token_counts, profile.key.aggregator, profile.key.selection)
    raw_logits = np.array([s.margin for s in samples], dtype=np.float64)
    calibrated_logits = predict_logits(profile.terms, samples)
    return CalibratedComparison(
        profile=profile.hash,
        temperature=profile.terms.temperature,
        length_control=profile.length_control,
        aggregator=profile.key.aggregator,
        selection=profile.key.selection,
        in_sample=profile.fitted_on is not None and profile.fitted_on.gold_sha256 == gold_sha256,
        gold_prefers_longer=length_bias(
            [s.gold for s in samples], [s.tokens_a for s in samples], [s.tokens_b for s in samples]
        ),
        raw=metrics_of(raw_logits, samples, n_bins),
        calibrated=metrics_of(calibrated_logits, samples, n_bins),
        length_rows=[
            length_row("gold", [s.gold for s in samples], samples),
            length_row("raw", _verdicts(raw_logits), samples),
            length_row("calibrated", _verdicts(calibrated_logits), samples),
        ],
    )
