"""Fitting a calibration profile on a gold set, and measuring it honestly: pure.

The model is the one of labeling/calibration.py: `p_a = σ(w·m + λ·L)` with m the label
margin and L = log(tokens_a / tokens_b). It is a logistic regression with no intercept (an
intercept would prefer whichever response is called "a", breaking antisymmetry) on at most
two features, fitted by minimising log loss against the
gold probability (soft gold `p_a` where the file gives one, else 1 or 0). Few parameters, so
a few hundred gold pairs suffice, and 30 is the floor below which we refuse to fit.

Why Newton's method written out rather than a library optimizer: scipy is not a dependency
of cai-judge, and this objective is smooth and strictly convex (a small ridge keeps it so,
and keeps the weights finite when a gold set is separable), with a 2×2 Hessian that costs
nothing: damped Newton with a backtracking line search converges in a handful of steps to
machine precision, and each step is two lines of numpy that a reader can check.

One constraint: w ≥ 0, unless the caller allows a reversal. A negative w turns every label
of the judge into its opposite. When the unconstrained optimum wants that, the fit says so
(`FitResult.direction_rejected`) and `calibrate` writes no profile: no temperature rescues a
judge whose margin points away from gold. `--allow-reversal` is for when that is expected
(a constitution whose questions ask "which is worse?") or measured and accepted: the shipped
default model's margin points away from the shipped gold set under every shipped
constitution (it agrees with gold on 37% of pairs with `harmless`), because it mostly scores
length.

Every number a report shows about a calibration is cross-validated: k folds over groups of
pairs (a pair and its swap, or two copies of one pair, share a group and so a fold), each
fold scored by terms fitted on the other folds only. The raw numbers are the judge's own
`p_a = σ(m)`, which was fitted on nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from cai_judge.evaluation.gold import GoldPair
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
from cai_judge.evaluation.runner import JudgeRun
from cai_judge.labeling.calibration import (
    CalibrationProfile,
    CalibrationTerms,
    calibrated_logit,
    log_length_ratio,
)
from cai_judge.labeling.label_math import (
    Aggregator,
    aggregate_margin,
    preferred_from_margin,
    select_principles,
    selection_seed,
    sigmoid,
)
from cai_judge.labeling.schema import PairError

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
    # Pairs with the same prompt and the same two responses, in either order.
    group: str
    margin: float
    tokens_a: int
    tokens_b: int
    target: float
    gold: Literal["a", "b"]

    @property
    def length_feature(self) -> float:
        return log_length_ratio(self.tokens_a, self.tokens_b)


@dataclass(frozen=True, slots=True)
class FitSpec:
    length_control: bool = False
    allow_reversal: bool = False
    ridge: float = DEFAULT_RIDGE

    def columns(self) -> list[str]:
        return ["inverse_temperature", *(["length_weight"] if self.length_control else [])]


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


def pair_group(gold: GoldPair) -> str:
    """Content key shared by a pair and its swap (and by exact copies under other ids)."""
    first, second = sorted((gold.response_a, gold.response_b))
    material = json.dumps([gold.prompt_key(), first, second], ensure_ascii=False)
    return hashlib.sha256(material.encode()).hexdigest()


def calibration_samples(
    run: JudgeRun,
    token_counts: Mapping[str, tuple[int, int]],
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS,
    selection: int | Literal["all"] = "all",
) -> list[CalibrationSample]:
    """Each scored pair's margin exactly as a label would carry it.

    `score_gold` scores every principle; a selection of k is redrawn per pair with the
    service's own seeded sampler (DESIGN.md §2), so the margins are those `/v1/labels` would
    return for `principles=k` and the run's seed.
    """
    spec = run.constitution
    samples = []
    for scored in run.scored:
        gold = scored.gold
        by_id = {b.principle_id: b for b in scored.scores.principles}
        k = None if selection == "all" else selection
        seed = selection_seed(
            gold.prompt_key(), gold.response_a, gold.response_b, spec.version, run.seed
        )
        used = [by_id[pid] for pid in select_principles(spec.principle_ids, k, seed)]
        tokens_a, tokens_b = token_counts[gold.id]
        samples.append(
            CalibrationSample(
                pair_id=gold.id,
                group=pair_group(gold),
                margin=aggregate_margin(used, aggregator),
                tokens_a=tokens_a,
                tokens_b=tokens_b,
                target=gold.target,
                gold=gold.preferred,
            )
        )
    return samples


# -- the fit ---------------------------------------------------------------------------


def feature_matrix(samples: Sequence[CalibrationSample], spec: FitSpec) -> FloatArray:
    """Columns in `spec.columns()` order: m, then L."""
    columns = [np.array([s.margin for s in samples], dtype=np.float64)]
    if spec.length_control:
        columns.append(np.array([s.length_feature for s in samples], dtype=np.float64))
    return np.column_stack(columns)


def _objective(weights: FloatArray, x: FloatArray, y: FloatArray, ridge: float) -> float:
    z = x @ weights
    # y·log(1+e^−z) + (1−y)·log(1+e^z), overflow-free.
    loss = y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z)
    return float(loss.sum() + 0.5 * ridge * weights @ weights)


def _newton(
    x: FloatArray, y: FloatArray, ridge: float, free: Sequence[int]
) -> tuple[FloatArray, int]:
    """Minimise the ridge-penalised log loss over the `free` columns, the others held at 0."""
    weights = np.zeros(x.shape[1], dtype=np.float64)
    free_index = np.array(free, dtype=np.intp)
    if free_index.size == 0:
        return weights, 0
    sub = x[:, free_index]
    current = _objective(weights, x, y, ridge)
    for step in range(1, _NEWTON_MAX_STEPS + 1):
        z = x @ weights
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))
        gradient = sub.T @ (p - y) + ridge * weights[free_index]
        if float(np.max(np.abs(gradient))) < _GRADIENT_TOLERANCE:
            return weights, step - 1
        hessian = (sub * (p * (1 - p))[:, None]).T @ sub + ridge * np.eye(free_index.size)
        direction = np.linalg.solve(hessian, gradient)
        # Backtracking: a full Newton step can overshoot where the loss is far from
        # quadratic (large margins); halve it until the loss decreases enough (Armijo).
        length = 1.0
        while length > 1e-12:
            trial = weights.copy()
            trial[free_index] -= length * direction
            value = _objective(trial, x, y, ridge)
            if value <= current - 1e-4 * length * float(gradient @ direction):
                break
            length /= 2
        else:
            return weights, step
        weights, current = trial, value
    return weights, _NEWTON_MAX_STEPS


def fit_terms(samples: Sequence[CalibrationSample], spec: FitSpec) -> FitResult:
    """Maximum-likelihood terms, with w ≥ 0 unless `spec.allow_reversal`."""
    if not samples:
        raise ValueError("cannot fit a calibration on no pairs")
    x = feature_matrix(samples, spec)
    y = np.array([s.target for s in samples], dtype=np.float64)
    every = list(range(x.shape[1]))
    weights, steps = _newton(x, y, spec.ridge, every)
    unconstrained_w = float(weights[0])
    if unconstrained_w < 0 and not spec.allow_reversal:
        # Strictly convex objective, one linear bound: when the free optimum violates it,
        # the bounded optimum lies on the bound, so w = 0 and the rest refitted.
        weights, more = _newton(x, y, spec.ridge, every[1:])
        steps += more
    named = dict(zip(spec.columns(), (float(w) for w in weights), strict=True))
    return FitResult(
        terms=CalibrationTerms(**named),
        unconstrained_inverse_temperature=unconstrained_w,
        steps=steps,
        allow_reversal=spec.allow_reversal,
    )


def predict_logits(
    terms: CalibrationTerms, samples: Sequence[CalibrationSample], spec: FitSpec
) -> FloatArray:
    """Calibrated log-odds through the very function the service applies."""
    return np.array(
        [
            calibrated_logit(terms, s.margin, s.length_feature if spec.length_control else 0.0)
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
    """A fold per sample: groups shuffled by `seed`, then dealt round-robin, so fold sizes
    differ by at most one group and a group never straddles two folds."""
    groups = sorted({s.group for s in samples})
    if folds < 2 or folds > len(groups):
        raise ValueError(f"folds must be from 2 to {len(groups)} (distinct pairs), got {folds}")
    order = np.random.default_rng(seed).permutation(len(groups))
    fold_of_group = {groups[g]: position % folds for position, g in enumerate(order)}
    return [fold_of_group[s.group] for s in samples]


def cross_validate(
    samples: Sequence[CalibrationSample],
    spec: FitSpec,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
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
        logits[test_index] = predict_logits(terms, [samples[i] for i in test_index], spec)
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


class CalibrationPairRow(BaseModel):
    id: str
    gold: Verdict
    target: float
    fold: int
    tokens_a: int
    tokens_b: int
    raw_margin: float
    raw_p_a: float
    cross_validated_p_a: float


class GoldInfo(BaseModel):
    path: str
    sha256: str
    pairs: int
    scored: int
    errors: list[PairError]


class CalibrationReport(BaseModel):
    schema_version: int = 1
    gold: GoldInfo
    profile: CalibrationProfile
    temperature: float | None = Field(description="T = 1/w of the profile; null when w = 0")
    unconstrained_inverse_temperature: float
    folds: int
    seed: int
    n_bins: int
    gold_prefers_longer: LengthBias = Field(description="P(gold prefers the longer response)")
    raw: CalibrationMetrics = Field(description="the judge's own p_a = σ(margin)")
    cross_validated: CalibrationMetrics = Field(
        description="the profile's form, each pair scored by a fit on the other folds"
    )
    cross_validated_temperature_only: CalibrationMetrics | None = Field(
        description="a temperature alone, cross-validated; shown beside a length-controlled fit"
    )
    in_sample: CalibrationMetrics = Field(
        description="the final profile on the pairs it was fitted on: optimistic, for reference"
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


@dataclass(frozen=True, slots=True)
class CalibrationOutcome:
    report: CalibrationReport
    fit: FitResult

    @property
    def profile(self) -> CalibrationProfile:
        return self.report.profile


def _gain(raw: FloatArray, calibrated: FloatArray, n_resamples: int, seed: int) -> Estimate | None:
    return estimate(raw - calibrated, n_resamples=n_resamples, seed=seed)


def build_report(
    samples: Sequence[CalibrationSample],
    spec: FitSpec,
    make_profile: Callable[[FitResult, CalibrationMetrics, CalibrationMetrics], CalibrationProfile],
    gold: GoldInfo,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    n_bins: int = 10,
    n_resamples: int = 2000,
) -> CalibrationOutcome:
    """Fit on every sample, cross-validate the same form, and measure both against raw.

    `make_profile(fit, raw, cross_validated)` names the profile (model, template, ...), which
    this pure function does not know.
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
    temperature_only = None
    if spec.length_control:
        plain = FitSpec(allow_reversal=spec.allow_reversal, ridge=spec.ridge)
        temperature_only = metrics_of(
            cross_validate(samples, plain, folds, seed).logits, samples, n_bins
        )
    profile = make_profile(final, raw, cross)
    in_sample = metrics_of(predict_logits(final.terms, samples, spec), samples, n_bins)
    raw_p, cross_p = probabilities(raw_logits), probabilities(validated.logits)

    warnings = []
    if final.direction_rejected:
        warnings.append(
            f"the judge's margin points away from gold on this set (unconstrained 1/T = "
            f"{final.unconstrained_inverse_temperature:.3f}): it agrees with gold on "
            f"{100 * raw.agreement:.1f}% of pairs. No temperature can fix that; the profile "
            "is not written. Use a stronger judge or a constitution that fits the gold set, "
            "or --allow-reversal if a reversed judge is expected."
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
    report = CalibrationReport(
        gold=gold,
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
        cross_validated=cross,
        cross_validated_temperature_only=temperature_only,
        in_sample=in_sample,
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
                cross_validated_p_a=float(cross_p[i]),
            )
            for i, s in enumerate(samples)
        ],
    )
    return CalibrationOutcome(report=report, fit=final)


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


def calibrated_comparison(
    run: JudgeRun,
    token_counts: Mapping[str, tuple[int, int]],
    profile: CalibrationProfile,
    gold_sha256: str,
    n_bins: int = 10,
) -> CalibratedComparison:
    """Raw and calibrated metrics of the profile's own labels (its aggregator and selection)."""
    samples = calibration_samples(run, token_counts, profile.key.aggregator, profile.key.selection)
    spec = FitSpec(length_control=profile.length_control)
    raw_logits = np.array([s.margin for s in samples], dtype=np.float64)
    return CalibratedComparison(
        profile=profile.hash,
        temperature=profile.terms.temperature,
        length_control=profile.length_control,
        aggregator=profile.key.aggregator,
        selection=profile.key.selection,
        in_sample=profile.fitted_on.gold_sha256 == gold_sha256,
        gold_prefers_longer=length_bias(
            [s.gold for s in samples], [s.tokens_a for s in samples], [s.tokens_b for s in samples]
        ),
        raw=metrics_of(raw_logits, samples, n_bins),
        calibrated=metrics_of(predict_logits(profile.terms, samples, spec), samples, n_bins),
    )
