"""`cai-judge calibrate`: fit a calibration profile on a gold set, and show what it does.

The judge scores the gold set once (every principle, both orders, as `eval` does); the fit
and its cross-validation are then pure (evaluation/calibration.py). The profile is written
only when the fit is usable: a judge whose margin points away from gold gets a report that
says so, and no profile.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
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
    build_report,
    calibration_samples,
    pair_group,
)
from cai_judge.evaluation.render import calibration_rows, fmt_num, fmt_pct
from cai_judge.labeling.calibration import CalibrationProfile, FitRecord, ProfileKey
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.schema import ConstitutionRef, TemplateRef

if TYPE_CHECKING:
    from cai_judge.evaluation.gold import GoldPair
    from cai_judge.evaluation.runner import JudgeRun
    from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
    from cai_judge.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)


async def _score(
    settings: Settings,
    registry: ConstitutionRegistry,
    spec: ConstitutionSpec,
    gold: list[GoldPair],
    seed: int,
    batch_size: int,
) -> tuple[JudgeRun, dict[str, tuple[int, int]], TemplateRef]:
    from cai_judge.evaluation.runner import response_token_counts, score_gold

    console.print(f"starting the judge model {settings.model} ...")
    async with engine_session(settings, registry) as judge:
        started = time.perf_counter()
        with progress() as bar:
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
        counts = await response_token_counts(judge, gold)
        template = TemplateRef(id=spec.template, version=judge.renderer(spec.template).version)
        elapsed = time.perf_counter() - started
    console.print(
        f"scored {len(run.scored)} gold pair(s) in {elapsed:.1f} s (engine start excluded): "
        f"{run.usage.score_units} score units"
    )
    return run, counts, template


def _stdout() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _table(report: CalibrationReport) -> Table:
    terms = report.profile.terms
    # T is None when the fit put no weight on the margin (a rejected reversal).
    parts = [f"T = {'∞' if report.temperature is None else fmt_num(report.temperature, 4)}"]
    if report.profile.length_control:
        parts.append(f"λ = {terms.length_weight:.4g}")
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


def calibrate_command(
    gold_path: Annotated[
        Path,
        typer.Argument(
            metavar="GOLD.jsonl",
            exists=True,
            dir_okay=False,
            help="Pairs with a reference label: id, prompt, response_a, response_b, preferred "
            f"(a|b), optional p_a; at least {MIN_GOLD_PAIRS} pairs, a few hundred is better.",
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="The profile to write (PROFILE.json).")
    ],
    constitution: ConstitutionOption = "harmless",
    model: ModelOption = None,
    length_control: Annotated[
        bool,
        typer.Option(
            help="Also fit a term on log(tokens_a/tokens_b) that the profile removes from the "
            "margin (AlpacaEval 2.0's length control)."
        ),
    ] = False,
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
    """Fit a calibration profile (a temperature, optionally a length term) for one
    model and constitution on a gold set; report ECE, Brier and P(picks the longer response)
    before and after, cross-validated.

    Serve it by putting PROFILE.json in CAI_JUDGE_CALIBRATION_DIR and sending
    `calibrated: true`, or with `cai-judge label --calibration PROFILE.json`.
    """
    settings = build_settings(model=model, constitutions_dir=constitutions_dir)
    registry = load_registry(settings)
    spec = resolve_constitution(registry, constitution)
    options = label_options(
        principles=parse_principles(principles),
        seed=seed,
        aggregator=aggregator,
        low_mass_threshold=settings.low_mass_threshold,
    )
    if output.is_dir():
        raise fail(f"{output} is a folder; -o names the profile file to write")
    report_folder = report_dir or output.with_name(f"{output.stem}-report")
    if report_folder.exists() and not report_folder.is_dir():
        raise fail(f"{report_folder} exists and is not a folder; --report-dir names a folder")
    gold = load_gold(gold_path)
    if len(gold) < MIN_GOLD_PAIRS:
        raise fail(
            f"{gold_path} holds {len(gold)} pair(s); a calibration needs at least "
            f"{MIN_GOLD_PAIRS} (a few hundred is better): with fewer, the fitted temperature "
            "and the cross-validated numbers are mostly noise. Label more gold pairs."
        )
    groups = len({pair_group(g) for g in gold})
    if folds > groups:
        raise fail(f"--folds {folds} is more than the {groups} distinct pairs in {gold_path}")
    gold_sha256 = hashlib.sha256(gold_path.read_bytes()).hexdigest()

    run, counts, template = asyncio.run(_score(settings, registry, spec, gold, seed, batch_size))
    for error in run.errors:
        report_pair_error(error, " not scored")
    if len(run.scored) < MIN_GOLD_PAIRS:
        raise fail(
            f"only {len(run.scored)} of {len(gold)} gold pairs were scored (see above); a "
            f"calibration needs at least {MIN_GOLD_PAIRS}",
            ExitCode.SOME_PAIRS_FAILED,
        )
    samples = calibration_samples(run, counts, options.aggregator, options.principles)
    key = ProfileKey(
        model=run.model,
        template=template,
        constitution=ConstitutionRef(id=spec.id, version=spec.version),
        aggregator=options.aggregator,
        selection=options.principles,
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
                folds=folds,
                seed=seed,
                ece_raw=raw.ece,
                ece_cross_validated=cross.ece,
                brier_raw=raw.brier,
                brier_cross_validated=cross.brier,
            ),
            length_control=length_control,
        )

    outcome = build_report(
        samples,
        FitSpec(length_control=length_control, allow_reversal=allow_reversal),
        make_profile,
        GoldInfo(
            path=str(gold_path),
            sha256=gold_sha256,
            pairs=len(gold),
            scored=len(run.scored),
            errors=list(run.errors),
        ),
        folds=folds,
        seed=seed,
        n_bins=bins,
        n_resamples=bootstrap,
    )
    from cai_judge.evaluation.render import write_calibration_report

    json_path, html_path = write_calibration_report(outcome.report, report_folder)
    _stdout().print(_table(outcome.report))
    console.print(f"wrote the report {json_path} and {html_path}")
    for warning in outcome.report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if outcome.fit.direction_rejected:
        raise fail(f"no profile written to {output} (see the warning above)", ExitCode.NO_PROFILE)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(outcome.profile.to_json(), encoding="utf-8")
    console.print(
        f"wrote the profile {output} ({outcome.profile.short_hash}); serve it from "
        "CAI_JUDGE_CALIBRATION_DIR with `calibrated: true`, or label with "
        f"`cai-judge label --calibration {output}`"
    )
    if run.errors:
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))
