"""`cai-judge calibrate`: fit a calibration profile on a gold set, and show what it does.

The judge scores the gold set once (every principle, both orders, as `eval` does); the fit
and its cross-validation are then pure (evaluation/calibration_fit.py). The profile is written
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from cai_judge.cli.common import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONSTITUTION,
    BatchSizeOption,
    ConstitutionOption,
    ConstitutionsDirOption,
    ExitCode,
    ModelOption,
    build_settings,
    console,
    engine_session,
    fail,
    label_flags,
    label_options,
    load_gold,
    load_registry,
    progress,
    report_pair_error,
    resolve_constitution,
)
from cai_judge.evaluation.calibration_fit import (
    DEFAULT_FOLDS,
    MIN_GOLD_PAIRS,
    CalibrationReport,
    LengthOnlyReport,
    prompt_group,
)
from cai_judge.evaluation.render import calibration_rows, fmt_num, fmt_pct
from cai_judge.labeling.calibration_profile import CalibrationProfile

if TYPE_CHECKING:
    from cai_judge.evaluation.calibrate_run import CalibrationRuns, ProfileFit
    from cai_judge.evaluation.gold import GoldPair
    from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
    from cai_judge.labeling.options import LabelOptions
    from cai_judge.labeling.schema import Pair
    from cai_judge.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)


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


# A profile is fitted on the plain labels of one principle selection and aggregator.
@label_flags(only=("principles", "seed", "aggregator"))
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
    constitution: ConstitutionOption = DEFAULT_CONSTITUTION,
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
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = DEFAULT_FOLDS,
    bins: Annotated[int, typer.Option(min=2, max=100, help="Calibration bins.")] = 10,
    bootstrap: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 2000,
    report_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for calibration.json/.html (default: PROFILE-report/)."),
    ] = None,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    constitutions_dir: ConstitutionsDirOption = None,
    *,
    flags: dict[str, Any],
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
    from cai_judge.evaluation.calibrate_run import FitChoices, FitError, fit_profile

    settings = build_settings(model=model, constitutions_dir=constitutions_dir)
    registry = load_registry(settings)
    spec = resolve_constitution(registry, constitution)
    options = label_options(settings, **flags)
    report_folder = _report_folder(output, report_dir)
    gold = _load_gold_set(gold_path, folds) if gold_path is not None else []
    pairs = _read_unlabeled(unlabeled) if unlabeled is not None else []
    runs = asyncio.run(_score(settings, registry, spec, gold, pairs, options, batch_size))
    for error in runs.errors:
        report_pair_error(error, " not scored")
    choices = FitChoices(length_control, allow_reversal, folds, options.seed, bins, bootstrap)
    try:
        fitted = fit_profile(runs, spec, options, gold, gold_path, unlabeled, choices)
    except FitError as error:
        code = ExitCode.SOME_PAIRS_FAILED if error.pairs_failed else ExitCode.USAGE
        raise fail(str(error), code) from None
    _write_report(fitted, report_folder)
    if fitted.profile is None:
        raise fail(f"no profile written to {output} (see the warning above)", ExitCode.NO_PROFILE)
    _write_profile(output, fitted.profile)
    if runs.errors:
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))


async def _score(
    settings: Settings,
    registry: ConstitutionRegistry,
    spec: ConstitutionSpec,
    gold: list[GoldPair],
    unlabeled: list[Pair],
    options: LabelOptions,
    batch_size: int,
) -> CalibrationRuns:
    from cai_judge.evaluation.calibrate_run import score_for_calibration

    console.print(f"starting the judge model {settings.model} ...")
    async with engine_session(settings, registry) as judge:
        with progress() as bar:

            def on_task(name: str, total: int) -> Callable[[int], None]:
                return functools.partial(bar.advance, bar.add_task(name, total=total))

            runs = await score_for_calibration(
                judge, spec, gold, unlabeled, options, batch_size=batch_size, on_task=on_task
            )
    console.print(
        f"scored {runs.scored} pair(s) in {runs.elapsed_s:.1f} s (engine start excluded): "
        f"{runs.score_units} score units"
    )
    return runs


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
        # Cross-validation keeps a prompt's pairs in one fold (evaluation/calibration_fit.py).
        raise fail(f"--folds {folds} is more than the {groups} distinct prompts in {gold_path}")
    return gold


def _write_report(fitted: ProfileFit, folder: Path) -> None:
    from cai_judge.evaluation.render import write_calibration_report, write_length_only_report

    if fitted.length_only is not None:
        json_path, html_path = write_length_only_report(fitted.length_only, folder)
        _stdout().print(_length_only_table(fitted.length_only))
    else:
        assert fitted.report is not None
        json_path, html_path = write_calibration_report(fitted.report, folder)
        _stdout().print(_table(fitted.report))
        _stdout().print(_length_table(fitted.report))
    console.print(f"wrote the report {json_path} and {html_path}")
    for warning in fitted.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def _write_profile(output: Path, profile: CalibrationProfile) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(profile.to_json(), encoding="utf-8")
    console.print(
        f"wrote the profile {output} ({profile.short_hash}); serve it from "
        "CAI_JUDGE_CALIBRATION_DIR with `calibrated: true`, or label with "
        f"`cai-judge label --calibration {output}`"
    )
