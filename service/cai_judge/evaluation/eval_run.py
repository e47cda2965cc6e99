"""`eval` and `compare` as two calls: score a gold set with a running judge, and build the
report (issue 30: the commands only parse, call once and print).

The engine's lifetime stays the caller's (the CLI's `engine_session`, DESIGN.md §8): `run_eval`
takes a started judge, and `run_compare`, which may need two models one after the other,
takes a way to open one. Progress is reported through `on_task`, so no terminal code lives
here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from cai_judge.evaluation.gold import GoldPair
from cai_judge.evaluation.protocols import SEPARATE_RUN, Protocol
from cai_judge.evaluation.report import CompareReport, EvalReport, MetricOptions, compare, evaluate
from cai_judge.evaluation.runner import JudgeRun, response_token_counts, score_gold
from cai_judge.labeling.calibration_profile import CalibrationProfile, ProfileKey
from cai_judge.labeling.constitution import ConstitutionSpec
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.options import LabelOptions

# (task name, pairs) -> the callback that advances it by n pairs.
OnTask = Callable[[str, int], Callable[[int], None]]


def _no_progress(name: str, total: int) -> Callable[[int], None]:
    return lambda n: None


@dataclass(frozen=True)
class Scored:
    """Runs of one engine session, with what the summary line prints."""

    runs: list[JudgeRun]
    elapsed_s: float

    @property
    def score_units(self) -> int:
        return sum(r.usage.score_units for r in self.runs)


async def score_runs(
    judge: Judge,
    constitutions: Sequence[ConstitutionSpec],
    gold: Sequence[GoldPair],
    options: LabelOptions,
    *,
    modes: Sequence[int | None] = (None,),
    batch_size: int = 32,
    stage: str = "",
    on_task: OnTask = _no_progress,
) -> Scored:
    """Score the gold once per constitution and mode on one judge: None is the plain run, a
    number a CoT run with that many rationale tokens; runs come back per constitution, in
    the order of `modes`."""
    started = time.perf_counter()
    runs: list[JudgeRun] = []
    for spec in constitutions:
        for cot_max_tokens in modes:
            kind = "" if cot_max_tokens is None else " (CoT)"
            runs.append(
                await score_gold(
                    judge,
                    gold,
                    spec,
                    seed=options.seed,
                    low_mass_threshold=options.low_mass_threshold,
                    batch_size=batch_size,
                    on_progress=on_task(f"{stage}labeling with {spec.id}{kind}", len(gold)),
                    cot_max_tokens=cot_max_tokens,
                    cot_max_probability=options.cot_max_probability,
                )
            )
    return Scored(runs, time.perf_counter() - started)


def profile_key(
    profile: CalibrationProfile, model: str, spec: ConstitutionSpec, template_version: str
) -> ProfileKey:
    """The key `eval` holds a profile to: this model, constitution and template, read with
    the profile's own aggregator and selection (its labels are derived from the one run)."""
    read_as = LabelOptions(aggregator=profile.key.aggregator, principles=profile.key.selection)
    return ProfileKey.for_labels(model, spec, template_version, read_as)


def eval_modes(protocols: Sequence[Protocol], cot_max_tokens: int) -> list[int | None]:
    """The runs the protocols read: the plain run unless only `cot` is asked, then CoT."""
    plain = any(p not in SEPARATE_RUN for p in protocols)
    return ([None] if plain else []) + ([cot_max_tokens] if Protocol.COT in protocols else [])


@dataclass(frozen=True)
class EvalOutcome:
    report: EvalReport
    scored: Scored

    @property
    def not_scored(self) -> int:
        return sum(len(run.errors) for run in self.scored.runs)


async def run_eval(
    judge: Judge,
    spec: ConstitutionSpec,
    gold: Sequence[GoldPair],
    gold_path: Path,
    protocols: Sequence[Protocol],
    options: LabelOptions,
    metrics: MetricOptions,
    *,
    profile: CalibrationProfile | None = None,
    batch_size: int = 32,
    on_task: OnTask = _no_progress,
) -> EvalOutcome:
    """Score the gold set and report every protocol; with `profile`, also the profile's
    labels beside the raw ones (CalibrationError when it was fitted for another judge).

    Each protocol of the plain run reads the same numbers; `cot` has a run of its own on the
    same engine, merged into the one report.
    """
    token_counts: dict[str, tuple[int, int]] = {}
    if profile is not None:
        # Checked before the long scoring: the template version needs the running judge.
        version = judge.renderer(spec.template).version
        profile.check_applies_to(profile_key(profile, judge.engine.model_name, spec, version))
        token_counts = await response_token_counts(judge, gold)
    modes = eval_modes(protocols, options.rationale_tokens)
    scored = await score_runs(
        judge, [spec], gold, options, modes=modes, batch_size=batch_size, on_task=on_task
    )
    plain = [p for p in protocols if p not in SEPARATE_RUN]
    reports = [
        evaluate(run, plain if tokens is None else [Protocol.COT], str(gold_path), len(gold),
                 metrics)
        for run, tokens in zip(scored.runs, modes, strict=True)
    ]  # fmt: skip
    report = reports[0]
    for extra in reports[1:]:
        _merge_report(report, extra)
    # A profile is fitted on plain labels: it is compared on the plain run only.
    if profile is not None and modes[0] is None:
        from cai_judge.evaluation.calibration_fit import calibrated_comparison

        gold_sha256 = hashlib.sha256(gold_path.read_bytes()).hexdigest()
        comparison = calibrated_comparison(
            scored.runs[0], token_counts, profile, gold_sha256, metrics.n_bins
        )
        report = report.model_copy(update={"calibrated": comparison})
    return EvalOutcome(report, scored)


def _merge_report(report: EvalReport, extra: EvalReport) -> None:
    """Put another run's protocols (CoT) beside the plain run's in one report.

    Each protocol's metrics stay computed on the pairs its own run scored; the per-pair
    table keeps the pairs both runs scored, so every row has every protocol's verdict.
    """
    report.protocols.update(extra.protocols)
    extra_pairs = {p.id: p for p in extra.pairs}
    report.pairs = [
        p.model_copy(update={"verdicts": {**p.verdicts, **extra_pairs[p.id].verdicts}})
        for p in report.pairs
        if p.id in extra_pairs
    ]
    known = {e.index for e in report.gold.errors}
    report.gold.errors += [e for e in extra.gold.errors if e.index not in known]
    report.usage.add(extra.usage)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a judge model and a constitution."""

    model: str
    spec: ConstitutionSpec


@dataclass(frozen=True)
class CompareOutcome:
    report: CompareReport
    runs: tuple[JudgeRun, JudgeRun]
    # One engine session per model: one entry when both sides share the model.
    sessions: list[Scored]


async def run_compare(
    open_judge: Callable[[str, str], AbstractAsyncContextManager[Judge]],
    a: Side,
    b: Side,
    gold: Sequence[GoldPair],
    gold_path: Path,
    protocol: Protocol,
    options: LabelOptions,
    metrics: MetricOptions,
    *,
    batch_size: int = 32,
    on_task: OnTask = _no_progress,
) -> CompareOutcome:
    """Score both sides on the same gold and compare them under `protocol`.

    `open_judge(model, stage)` starts a judge on `model`. One engine serves both sides when
    they share the model, so the comparison then differs in nothing else; two models never
    share the machine: each engine is shut down before the next starts.
    """
    # Both sides run in the mode the protocol reads.
    modes = [options.rationale_tokens if protocol in SEPARATE_RUN else None]
    sessions: list[Scored] = []
    if a.model == b.model:
        async with open_judge(a.model, "") as judge:
            sessions.append(
                await score_runs(judge, [a.spec, b.spec], gold, options, modes=modes,
                                 batch_size=batch_size, on_task=on_task)
            )  # fmt: skip
        run_a, run_b = sessions[0].runs
    else:
        for side, stage in ((a, "a: "), (b, "b: ")):
            async with open_judge(side.model, stage) as judge:
                sessions.append(
                    await score_runs(judge, [side.spec], gold, options, modes=modes,
                                     batch_size=batch_size, stage=stage, on_task=on_task)
                )  # fmt: skip
        [run_a], [run_b] = sessions[0].runs, sessions[1].runs
    report = compare(run_a, run_b, protocol, str(gold_path), len(gold), metrics)
    return CompareOutcome(report, (run_a, run_b), sessions)
