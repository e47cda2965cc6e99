"""`cai-judge calibrate`: fit a calibration profile on a gold set, and show what it does.

The judge scores the gold set once (every principle, both orders, as `eval` does); the fit
and its cross-validation are then pure (evaluation/calibration.py). The profile is written
only when the fit is usable: a judge whose margin points away from gold gets a report that
says so, and no profile.

Length control is counterfactual: the judge's own length sensitivity β per
principle is estimated from its margins, without labels, and subtracted. `--length-control`
estimates it on the gold set's pairs; `--unlabeled PAIRS.jsonl` estimates it on the user's own
pairs, and with no gold set that is the whole fit (a profile with T = 1).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from cai_judge.cli.common import (
    AggregatorOption,
    BatchSizeOption,
    ConstitutionOption,
    ConstitutionsDirOption,
    ExitCode,
    ModelOption,
    PrinciplesOption,
    SeedOption,
    build_settings,
    console,
    engine_session,
    fail,
    label_options,
    load_gold,
    load_registry,
    parse_principles,
    progress,
    report_pair_error,
    resolve_constitution,
)
from cai_judge.evaluation.calibration import (
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
    prompt_group,
)
from cai_judge.evaluation.render import calibration_rows, fmt_num, fmt_pct
from cai_judge.labeling.calibration import (
    CalibrationProfile,
    CalibrationTerms,
    FitRecord,
    LengthFitRecord,
    ProfileKey,
)
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.schema import ConstitutionRef, TemplateRef

if TYPE_CHECKING:
    from cai_judge.evaluation.gold import GoldPair
    from cai_judge.evaluation.runner import JudgeRun, PairsRun
    from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
    from cai_judge.labeling.options import LabelOptions
    from cai_judge.labeling.schema import Pair
    from cai_judge.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)


async def _score(
    settings: Settings,
    registry: ConstitutionRegistry,
    spec: ConstitutionSpec,
    gold: list[GoldPair],
    unlabeled: list[Pair],
    seed: int,
    batch_size: int,
) -> tuple[JudgeRun | None, PairsRun | None, dict[str, tuple[int, int]], TemplateRef]:
    """One engine session for both files: the gold run, the unlabeled run, and the token
    counts of every pair (ids are per file, so unlabeled counts are keyed `unlabeled:ID`)."""
    from cai_judge.evaluation.runner import response_token_counts, score_gold, score_unlabeled

    console.print(f"starting the judge model {settings.model} ...")
    run = pairs_run = None
    counts: dict[str, tuple[int, int]] = {}
    async with engine_session(settings, registry) as judge:
        started = time.perf_counter()
        with progress() as bar:
            if gold:
                task = bar.add_task(f"scoring gold with {spec.id}", total=len(gold))
                run = await score_gold(
                    judge,
                    gold,
                    spec,
                    seed=seed,
                    low_mass_threshold=settings.low_mass_threshold,
                    batch_size=batch_size,
                    on_progress=functools.partial(bar.advance, task),
                )
                counts.update(await response_token_counts(judge, gold))
            if unlabeled:
                task = bar.add_task(f"scoring unlabeled pairs with {spec.id}", total=len(unlabeled))
                pairs_run = await score_unlabeled(
                    judge,
                    unlabeled,
                    spec,
                    seed=seed,
                    low_mass_threshold=settings.low_mass_threshold,
                    batch_size=batch_size,
                    on_progress=functools.partial(bar.advance, task),
                )
                found = await response_token_counts(judge, unlabeled)
                counts.update({f"unlabeled:{pid}": n for pid, n in found.items()})
        template = TemplateRef(id=spec.template, version=judge.renderer(spec.template).version)
        elapsed = time.perf_counter() - started
    units = sum(r.usage.score_units for r in (run, pairs_run) if r is not None)
    scored = sum(len(r.scored) for r in (run, pairs_run) if r is not None)
    console.print(
        f"scored {scored} pair(s) in {elapsed:.1f} s (engine start excluded): {units} score units"
    )
    return run, pairs_run, counts, template


def _stdout() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _table(report: CalibrationReport) -> Table:
    # T is None when the fit put no weight on the margin (a rejected reversal).
    parts = [f"T = {'∞' if report.temperature is None else fmt_num(report.temperature, 4)}"]
    if report.length is not None:
        beta = report.length.sensitivity
        parts.append(
            f"mean β = {sum(beta.values()) / len(beta):+.4f} over {len(beta)} principles, from "
            f"{report.length.source} pairs"
        )
    table = Table(
        "p_a", "ECE", "Brier", "log loss", "agree", "longer",
        title=f"calibration · {report.profile.key.constitution.id} · {report.profile.key.model}",
        caption=(
            f"{report.gold.scored} gold pairs, {report.folds}-fold cross-validated; "
            f"{', '.join(parts)}. longer: P(picks the longer response, in tokens), gold "
            f"{fmt_pct(report.gold_prefers_longer.prefers_longer)}"
        ),
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    for name, found in calibration_rows(report):
        table.add_row(
            name,
            fmt_num(found.ece),
            fmt_num(found.brier),
            fmt_num(found.log_loss),
            fmt_pct(found.agreement),
            fmt_pct(found.prefers_longer.prefers_longer),
        )
    return table


def _length_table(report: CalibrationReport) -> Table:
    table = Table(
        "verdicts", "longer", "longer | shorter wins", "agree | shorter wins",
        "agree | longer wins",
        title="length: P(picks the longer response, in tokens)",
        caption="longer | shorter wins: on the pairs where gold prefers the shorter response "
        "(gold's own is 0 there); debiased and calibrated are cross-validated",
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    for row in report.length_rows:
        table.add_row(
            row.name,
            fmt_pct(row.prefers_longer.prefers_longer),
            fmt_pct(row.prefers_longer_when_shorter_wins.prefers_longer),
            fmt_pct(row.agreement_shorter_wins),
            fmt_pct(row.agreement_longer_wins),
        )
    return table


def _length_only_table(report: LengthOnlyReport) -> Table:
    beta = report.length.sensitivity
    table = Table(
        "verdicts", "longer",
        title=f"length debiasing · {report.profile.key.constitution.id} · "
        f"{report.profile.key.model}",
        caption=f"{report.length.scored} unlabeled pairs; mean β = "
        f"{sum(beta.values()) / len(beta):+.4f} over {len(beta)} principles (pooled "
        f"{report.length.pooled_sensitivity:+.4f}); longer: P(picks the longer response, in "
        "tokens); no gold, so no temperature",
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    table.add_row("raw", fmt_pct(report.raw_prefers_longer.prefers_longer))
    table.add_row("debiased", fmt_pct(report.debiased_prefers_longer.prefers_longer))
    return table


def _read_unlabeled(path: Path) -> list[Pair]:
    """An unlabeled pairs file, refused whole on a bad line or a repeated id: β over part of
    a file would describe another set than the one the profile names."""
    from cai_judge.cli.pairs_file import holds_groups, read_groups, read_pairs

    # The policy's own samples, as a rewards request's groups: pairs within each group.
    found = read_groups(path) if holds_groups(path) else read_pairs(path)
    problems = [f"  {path}:{b.line_number}: {b.reason}" for b in found.bad_lines]
    problems += [
        f"  {path}:{lines[1]}: id {pid!r} repeats line {lines[0]}"
        for pid, lines in found.duplicate_ids.items()
    ]
    if problems:
        raise fail(
            f"{len(problems)} problem(s) in --unlabeled {path}; nothing was scored:\n"
            + "\n".join(problems[:20])
        )
    if not found.pairs:
        raise fail(f"--unlabeled {path} holds no pairs")
    return found.pairs


def calibrate_command(
    gold_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[GOLD.jsonl]",
            exists=True,
            dir_okay=False,
            help="Pairs with a reference label: id, prompt, response_a, response_b, preferred "
            f"(a|b), optional p_a; at least {MIN_GOLD_PAIRS} pairs, a few hundred is better. "
            "Leave it out with --unlabeled to fit the length debiasing alone.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="The profile to write (PROFILE.json).")
    ] = None,
    constitution: ConstitutionOption = "harmless",
    model: ModelOption = None,
    length_control: Annotated[
        bool,
        typer.Option(
            help="Remove the judge's own length bias: estimate its length sensitivity β per "
            "principle from its margins (on the gold pairs, labels unused, or on --unlabeled), "
            "and subtract β·log(tokens_a/tokens_b) from the margin before the temperature."
        ),
    ] = False,
    unlabeled: Annotated[
        Path | None,
        typer.Option(
            metavar="PAIRS.jsonl",
            exists=True,
            dir_okay=False,
            help="Pairs with no label (id, prompt, response_a, response_b) to estimate β on, "
            "or groups of sampled completions (id, prompt, completions: the policy's own, "
            "paired within each group); implies --length-control. With no GOLD.jsonl, the "
            "profile debiases length only (T = 1).",
        ),
    ] = None,
    allow_reversal: Annotated[
        bool,
        typer.Option(
            help="Write the profile even when the judge's margin points away from gold, "
            "reversing its preferences (for questions phrased 'which is worse?')."
        ),
    ] = False,
    principles: PrinciplesOption = "all",
    aggregator: AggregatorOption = Aggregator.MEAN_LOGODDS,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = DEFAULT_FOLDS,
    seed: SeedOption = 0,
    bins: Annotated[int, typer.Option(min=2, max=100, help="Calibration bins.")] = 10,
    bootstrap: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 2000,
    report_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for calibration.json/.html (default: PROFILE-report/)."),
    ] = None,
    batch_size: BatchSizeOption = 32,
    constitutions_dir: ConstitutionsDirOption = None,
) -> None:
    """Fit a calibration profile (a temperature, optionally length debiasing) for one
    model and constitution on a gold set; report ECE, Brier and P(picks the longer response)
    before and after, cross-validated. With --unlabeled and no gold set, fit the length
    debiasing alone.

    Serve it by putting PROFILE.json in CAI_JUDGE_CALIBRATION_DIR and sending
    `calibrated: true`, or with `cai-judge label --calibration PROFILE.json`.
    """
    if output is None:
        raise fail("-o/--output is required: it names the profile file to write")
    if gold_path is None and unlabeled is None:
        raise fail(
            "give a gold set (GOLD.jsonl), --unlabeled PAIRS.jsonl for length debiasing alone, "
            "or both"
        )
    settings = build_settings(model=model, constitutions_dir=constitutions_dir)
    registry = load_registry(settings)
    spec = resolve_constitution(registry, constitution)
    options = label_options(
        principles=parse_principles(principles),
        seed=seed,
        aggregator=aggregator,
        low_mass_threshold=settings.low_mass_threshold,
    )
    report_folder = _report_folder(output, report_dir)
    gold = _load_gold_set(gold_path, folds) if gold_path is not None else []
    pairs = _read_unlabeled(unlabeled) if unlabeled is not None else []

    run, pairs_run, counts, template = asyncio.run(
        _score(settings, registry, spec, gold, pairs, seed, batch_size)
    )
    for error in [*(run.errors if run else ()), *(pairs_run.errors if pairs_run else ())]:
        report_pair_error(error, " not scored")
    judged = run if run is not None else pairs_run
    assert judged is not None
    key = ProfileKey(
        model=judged.model,
        template=template,
        constitution=ConstitutionRef(id=spec.id, version=spec.version),
        aggregator=options.aggregator,
        selection=options.principles,
    )

    unlabeled_fit: _UnlabeledFit | None = None
    if pairs_run is not None and unlabeled is not None:
        unlabeled_fit = _fit_length_on_unlabeled(pairs_run, counts, options, unlabeled, len(pairs))
        if run is None:
            profile = CalibrationProfile.create(
                key,
                CalibrationTerms(
                    inverse_temperature=1.0, length_sensitivity=unlabeled_fit.sensitivity
                ),
                None,
                unlabeled_fit.record,
            )
            _write_length_only(
                length_only_report(unlabeled_fit.samples, profile, unlabeled_fit.info),
                report_folder,
            )
            _write_profile(output, profile)
            if pairs_run.errors:
                raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))
            return
    assert run is not None and gold_path is not None
    choices = _FitChoices(
        length_control=length_control,
        allow_reversal=allow_reversal,
        folds=folds,
        seed=seed,
        bins=bins,
        bootstrap=bootstrap,
    )
    fitted = _fit_on_gold(run, counts, gold, gold_path, key, options, unlabeled_fit, choices,
                           report_folder)  # fmt: skip
    if fitted is None:
        raise fail(f"no profile written to {output} (see the warning above)", ExitCode.NO_PROFILE)
    _write_profile(output, fitted)
    if run.errors or (pairs_run is not None and pairs_run.errors):
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))


def _report_folder(output: Path, report_dir: Path | None) -> Path:
    if output.is_dir():
        raise fail(f"{output} is a folder; -o names the profile file to write")
    report_folder = report_dir or output.with_name(f"{output.stem}-report")
    if report_folder.exists() and not report_folder.is_dir():
        raise fail(f"{report_folder} exists and is not a folder; --report-dir names a folder")
    return report_folder


def _load_gold_set(gold_path: Path, folds: int) -> list[GoldPair]:
    """The gold pairs, refused when too few to fit on or to cross-validate with `folds`."""
    gold = load_gold(gold_path)
    if len(gold) < MIN_GOLD_PAIRS:
        raise fail(
            f"{gold_path} holds {len(gold)} pair(s); a calibration needs at least "
            f"{MIN_GOLD_PAIRS} (a few hundred is better): with fewer, the fitted "
            "temperature and the cross-validated numbers are mostly noise. Label more gold "
            "pairs, or fit the length debiasing alone with --unlabeled."
        )
    groups = len({prompt_group(g) for g in gold})
    if folds > groups:
        # Cross-validation keeps a prompt's pairs in one fold (evaluation/calibration.py).
        raise fail(f"--folds {folds} is more than the {groups} distinct prompts in {gold_path}")
    return gold


@dataclass(frozen=True)
class _UnlabeledFit:
    """The length sensitivity β estimated on --unlabeled pairs, with what the report shows."""

    sensitivity: dict[str, float]
    samples: list[LengthSample]
    info: LengthInfo
    record: LengthFitRecord


def _fit_length_on_unlabeled(
    pairs_run: PairsRun,
    counts: dict[str, tuple[int, int]],
    options: LabelOptions,
    unlabeled: Path,
    pair_count: int,
) -> _UnlabeledFit:
    unlabeled_counts = {pid.removeprefix("unlabeled:"): n for pid, n in counts.items()
                        if pid.startswith("unlabeled:")}  # fmt: skip
    samples = length_samples(pairs_run, unlabeled_counts, options.aggregator, options.principles)
    if not samples:
        raise fail(f"no pair of --unlabeled {unlabeled} was scored", ExitCode.SOME_PAIRS_FAILED)
    try:
        sensitivity = estimate_length_sensitivity(samples)
    except ValueError as error:
        raise fail(f"--unlabeled {unlabeled}: {error}") from None
    sha256 = hashlib.sha256(unlabeled.read_bytes()).hexdigest()
    info = length_info(
        samples, sensitivity, source="unlabeled", path=str(unlabeled),
        sha256=sha256, pairs=pair_count, errors=pairs_run.errors,
    )  # fmt: skip
    record = LengthFitRecord(
        source="unlabeled", path=unlabeled.name, sha256=sha256, pairs=len(samples)
    )
    return _UnlabeledFit(sensitivity=sensitivity, samples=samples, info=info, record=record)


@dataclass(frozen=True)
class _FitChoices:
    length_control: bool
    allow_reversal: bool
    folds: int
    seed: int
    bins: int
    bootstrap: int


def _fit_on_gold(
    run: JudgeRun,
    counts: dict[str, tuple[int, int]],
    gold: list[GoldPair],
    gold_path: Path,
    key: ProfileKey,
    options: LabelOptions,
    unlabeled_fit: _UnlabeledFit | None,
    choices: _FitChoices,
    report_folder: Path,
) -> CalibrationProfile | None:
    """Fit on the gold set, write and print the report; None when the fit refused a direction."""
    if len(run.scored) < MIN_GOLD_PAIRS:
        raise fail(
            f"only {len(run.scored)} of {len(gold)} gold pairs were scored (see above); a "
            f"calibration needs at least {MIN_GOLD_PAIRS}",
            ExitCode.SOME_PAIRS_FAILED,
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
        raise fail(f"{gold_path}: {error}") from None
    from cai_judge.evaluation.render import write_calibration_report

    json_path, html_path = write_calibration_report(outcome.report, report_folder)
    _stdout().print(_table(outcome.report))
    _stdout().print(_length_table(outcome.report))
    console.print(f"wrote the report {json_path} and {html_path}")
    for warning in outcome.report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    return None if outcome.fit.direction_rejected else outcome.profile


def _write_length_only(report: LengthOnlyReport, folder: Path) -> None:
    from cai_judge.evaluation.render import write_length_only_report

    json_path, html_path = write_length_only_report(report, folder)
    _stdout().print(_length_only_table(report))
    console.print(f"wrote the report {json_path} and {html_path}")


def _write_profile(output: Path, profile: CalibrationProfile) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(profile.to_json(), encoding="utf-8")
    console.print(
        f"wrote the profile {output} ({profile.short_hash}); serve it from "
        "CAI_JUDGE_CALIBRATION_DIR with `calibrated: true`, or label with "
        f"`cai-judge label --calibration {output}`"
    )
