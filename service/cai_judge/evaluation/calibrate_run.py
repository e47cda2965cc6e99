"""`calibrate` as two calls: score the gold set and the unlabeled pairs with a running judge,
then fit the profile (issue 30: the command only parses, calls and prints).

The fit itself and its cross-validation are pure (evaluation/calibration_fit.py); this module
runs them in the order `calibrate` needs. Length control is counterfactual: the judge's
own length sensitivity β per principle is estimated from its margins without labels, on
the gold pairs (`length_control`) or on unlabeled pairs, which with no gold set is the
whole fit (a profile with T = 1). A judge whose margin points away from gold gets a report
that says so, and no profile (unless `allow_reversal`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cai_judge.constants import DEFAULT_SEED
from cai_judge.evaluation.calibration_fit import (
    DEFAULT_FOLDS,
    MIN_GOLD_PAIRS,
    CalibrationMetrics,
    CalibrationReport,
    FitResult,
    FitSpec,
    GoldInfo,
    LengthInfo,
    LengthOnlyReport,
    LengthSample,
    build_report,
    calibration_samples,
    estimate_length_sensitivity,
    length_info,
    length_only_report,
    length_samples,
)
from cai_judge.evaluation.gold import GoldPair
from cai_judge.evaluation.runner import (
    JudgeRun,
    PairsRun,
    response_token_counts,
    score_gold,
    score_unlabeled,
)
from cai_judge.labeling.calibration_profile import (
    CalibrationProfile,
    CalibrationTerms,
    FitRecord,
    LengthFitRecord,
    ProfileKey,
)
from cai_judge.labeling.constitution import ConstitutionSpec
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.options import LabelOptions
from cai_judge.labeling.schema import Pair, PairError

# (task name, pairs) -> the callback that advances it by n pairs.
OnTask = Callable[[str, int], Callable[[int], None]]


def _no_progress(name: str, total: int) -> Callable[[int], None]:
    return lambda n: None


class FitError(ValueError):
    """No profile can be fitted; `pairs_failed` when it is because pairs were not scored."""

    def __init__(self, message: str, *, pairs_failed: bool = False) -> None:
        super().__init__(message)
        self.pairs_failed = pairs_failed


@dataclass(frozen=True)
class CalibrationRuns:
    """One engine session over both files: the gold run, the unlabeled run, and the token
    counts of every pair (ids are per file, so unlabeled counts are keyed `unlabeled:ID`)."""

    gold: JudgeRun | None
    unlabeled: PairsRun | None
    counts: dict[str, tuple[int, int]]
    model: str
    template_version: str
    elapsed_s: float

    @property
    def errors(self) -> list[PairError]:
        return [e for r in (self.gold, self.unlabeled) if r is not None for e in r.errors]

    @property
    def scored(self) -> int:
        return sum(len(r.scored) for r in (self.gold, self.unlabeled) if r is not None)

    @property
    def score_units(self) -> int:
        return sum(r.usage.score_units for r in (self.gold, self.unlabeled) if r is not None)


async def score_for_calibration(
    judge: Judge,
    spec: ConstitutionSpec,
    gold: Sequence[GoldPair],
    unlabeled: Sequence[Pair],
    options: LabelOptions,
    *,
    batch_size: int = 32,
    on_task: OnTask = _no_progress,
) -> CalibrationRuns:
    """Score the gold pairs and the unlabeled ones (every principle, both orders, plain)."""
    started = time.perf_counter()
    run = pairs_run = None
    counts: dict[str, tuple[int, int]] = {}
    if gold:
        run = await score_gold(
            judge, gold, spec, seed=options.seed, low_mass_threshold=options.low_mass_threshold,
            batch_size=batch_size, on_progress=on_task(f"scoring gold with {spec.id}", len(gold)),
        )  # fmt: skip
        counts.update(await response_token_counts(judge, gold))
    if unlabeled:
        pairs_run = await score_unlabeled(
            judge, unlabeled, spec, seed=options.seed,
            low_mass_threshold=options.low_mass_threshold, batch_size=batch_size,
            on_progress=on_task(f"scoring unlabeled pairs with {spec.id}", len(unlabeled)),
        )  # fmt: skip
        found = await response_token_counts(judge, unlabeled)
        counts.update({f"unlabeled:{pid}": n for pid, n in found.items()})
    return CalibrationRuns(
        gold=run,
        unlabeled=pairs_run,
        counts=counts,
        model=judge.engine.model_name,
        template_version=judge.renderer(spec.template).version,
        elapsed_s=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class FitChoices:
    length_control: bool = False
    allow_reversal: bool = False
    folds: int = DEFAULT_FOLDS
    seed: int = DEFAULT_SEED
    bins: int = 10
    bootstrap: int = 2000


@dataclass(frozen=True)
class ProfileFit:
    """The fitted profile (None when the fit refused the margin's direction) and the report
    that shows it: `report` with a gold set, `length_only` without one."""

    profile: CalibrationProfile | None
    report: CalibrationReport | None = None
    length_only: LengthOnlyReport | None = None
    warnings: list[str] = field(default_factory=list)


def fit_profile(
    runs: CalibrationRuns,
    spec: ConstitutionSpec,
    options: LabelOptions,
    gold: Sequence[GoldPair],
    gold_path: Path | None,
    unlabeled_path: Path | None,
    choices: FitChoices,
) -> ProfileFit:
    """Fit the profile for these labels on what was scored; FitError when none can be."""
    key = ProfileKey.for_labels(runs.model, spec, runs.template_version, options)
    unlabeled_fit = None
    if runs.unlabeled is not None and unlabeled_path is not None:
        unlabeled_fit = _fit_length_on_unlabeled(runs.unlabeled, runs.counts, options,
                                                 unlabeled_path)  # fmt: skip
        if runs.gold is None:
            terms = CalibrationTerms(
                inverse_temperature=1.0, length_sensitivity=unlabeled_fit.sensitivity
            )
            profile = CalibrationProfile.create(key, terms, None, unlabeled_fit.record)
            report = length_only_report(unlabeled_fit.samples, profile, unlabeled_fit.info)
            return ProfileFit(profile, length_only=report)
    assert runs.gold is not None and gold_path is not None
    return _fit_on_gold(runs.gold, runs.counts, gold, gold_path, key, options, unlabeled_fit,
                        choices)  # fmt: skip


@dataclass(frozen=True)
class _UnlabeledFit:
    """The length sensitivity β estimated on unlabeled pairs, with what the report shows."""

    sensitivity: dict[str, float]
    samples: list[LengthSample]
    info: LengthInfo
    record: LengthFitRecord


def _fit_length_on_unlabeled(
    pairs_run: PairsRun,
    counts: dict[str, tuple[int, int]],
    options: LabelOptions,
    unlabeled: Path,
) -> _UnlabeledFit:
    unlabeled_counts = {pid.removeprefix("unlabeled:"): n for pid, n in counts.items()
                        if pid.startswith("unlabeled:")}  # fmt: skip
    samples = length_samples(pairs_run, unlabeled_counts, options.aggregator, options.principles)
    if not samples:
        raise FitError(f"no pair of --unlabeled {unlabeled} was scored", pairs_failed=True)
    try:
        sensitivity = estimate_length_sensitivity(samples)
    except ValueError as error:
        raise FitError(f"--unlabeled {unlabeled}: {error}") from None
    sha256 = hashlib.sha256(unlabeled.read_bytes()).hexdigest()
    pairs = len(pairs_run.scored) + len(pairs_run.errors)
    info = length_info(
        samples, sensitivity, source="unlabeled", path=str(unlabeled),
        sha256=sha256, pairs=pairs, errors=pairs_run.errors,
    )  # fmt: skip
    record = LengthFitRecord(
        source="unlabeled", path=unlabeled.name, sha256=sha256, pairs=len(samples)
    )
    return _UnlabeledFit(sensitivity=sensitivity, samples=samples, info=info, record=record)


def _fit_on_gold(
    run: JudgeRun,
    counts: dict[str, tuple[int, int]],
    gold: Sequence[GoldPair],
    gold_path: Path,
    key: ProfileKey,
    options: LabelOptions,
    unlabeled_fit: _UnlabeledFit | None,
    choices: FitChoices,
) -> ProfileFit:
    if len(run.scored) < MIN_GOLD_PAIRS:
        raise FitError(
            f"only {len(run.scored)} of {len(gold)} gold pairs were scored (see above); a "
            f"calibration needs at least {MIN_GOLD_PAIRS}",
            pairs_failed=True,
        )
    samples = calibration_samples(run, counts, options.aggregator, options.principles)
    gold_sha256 = hashlib.sha256(gold_path.read_bytes()).hexdigest()
    length_record = unlabeled_fit.record if unlabeled_fit is not None else None
    debias = choices.length_control or unlabeled_fit is not None
    if debias and length_record is None:
        length_record = LengthFitRecord(
            source="gold", path=gold_path.name, sha256=gold_sha256, pairs=len(samples)
        )

    def make_profile(
        fit: FitResult, raw: CalibrationMetrics, cross: CalibrationMetrics
    ) -> CalibrationProfile:
        return CalibrationProfile.create(
            key,
            fit.terms,
            FitRecord(
                gold_sha256=gold_sha256,
                gold_pairs=len(samples),
                folds=choices.folds,
                seed=choices.seed,
                ece_raw=raw.ece,
                ece_cross_validated=cross.ece,
                brier_raw=raw.brier,
                brier_cross_validated=cross.brier,
            ),
            length_record if fit.terms.length_sensitivity is not None else None,
        )

    try:
        outcome = build_report(
            samples,
            FitSpec(
                length_control=debias,
                allow_reversal=choices.allow_reversal,
                fixed_sensitivity=unlabeled_fit.sensitivity if unlabeled_fit else None,
            ),
            make_profile,
            GoldInfo(
                path=str(gold_path),
                sha256=gold_sha256,
                pairs=len(gold),
                scored=len(run.scored),
                errors=list(run.errors),
            ),
            length=unlabeled_fit.info if unlabeled_fit else None,
            folds=choices.folds,
            seed=choices.seed,
            n_bins=choices.bins,
            n_resamples=choices.bootstrap,
        )
    except ValueError as error:
        raise FitError(f"{gold_path}: {error}") from None
    profile = None if outcome.fit.direction_rejected else outcome.profile
    return ProfileFit(profile, report=outcome.report, warnings=list(outcome.report.warnings))
