"""`cai-judge eval` and `cai-judge compare`: a judge measured against gold preferences."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from enum import StrEnum
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
from cai_judge.evaluation.protocols import SEPARATE_RUN, Protocol
from cai_judge.evaluation.render import (
    fmt_estimate,
    fmt_interval,
    fmt_num,
    fmt_pct,
    fmt_signed_estimate,
    write_compare_report,
    write_eval_report,
)
from cai_judge.evaluation.report import (
    CompareReport,
    EvalReport,
    MetricOptions,
    ProtocolReport,
)
from cai_judge.labeling.calibration_profile import CalibrationError

if TYPE_CHECKING:
    from cai_judge.evaluation.eval_run import CompareOutcome, EvalOutcome, OnTask, Scored
    from cai_judge.evaluation.runner import JudgeRun
    from cai_judge.labeling.calibration_profile import CalibrationProfile
    from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
    from cai_judge.labeling.judge import Judge
    from cai_judge.settings import Settings


class ProtocolChoice(StrEnum):
    ALL = "all"
    CAI = Protocol.CAI.value
    SINGLE_ORDER = Protocol.SINGLE_ORDER.value
    BOTH_ORDERS_TIE = Protocol.BOTH_ORDERS_TIE.value
    SINGLE_PRINCIPLE = Protocol.SINGLE_PRINCIPLE.value
    COT = Protocol.COT.value


GoldArgument = Annotated[
    Path,
    typer.Argument(
        metavar="GOLD.jsonl",
        exists=True,
        dir_okay=False,
        help="Pairs with a reference label: id, prompt, response_a, response_b, preferred "
        "(a|b), optional p_a and category; other fields are ignored.",
    ),
]
OutputOption = Annotated[
    Path, typer.Option("-o", "--output", help="Folder for the report (created if missing).")
]
BinsOption = Annotated[int, typer.Option(min=2, max=100, help="Calibration bins.")]
# Every principle in both orders, plain (and CoT for protocol `cot`): only these are the
# run's choice.
_eval_flags = label_flags(
    only=("seed", "cot_max_tokens"),
    help={"cot_max_tokens": "Protocol `cot`: rationale tokens per principle and order."},
)
ResamplesOption = Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")]


def register(app: typer.Typer) -> None:
    """Add `eval` and `compare` to the `cai-judge` app."""
    app.command("eval")(eval_command)
    app.command("compare")(compare_command)


def _protocols(choices: Sequence[ProtocolChoice] | None) -> list[Protocol]:
    """`all` is every protocol of the one plain run; `cot` needs a (slower) run of its own,
    so it is only run when named, beside `all` or alone."""
    wanted = {c.value for c in choices or ()}
    if not choices or ProtocolChoice.ALL in choices:
        wanted |= {p.value for p in Protocol if p not in SEPARATE_RUN}
    # Keep the canonical order whatever order the flags came in, so reports line up.
    return [p for p in Protocol if p.value in wanted]


def _check_output(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise fail(f"{directory} exists and is not a folder; -o names the report folder")


def _load_profile(path: Path, settings: Settings, spec: ConstitutionSpec) -> CalibrationProfile:
    """The profile, checked against the model and constitution before the engine starts
    (its own template version stands in: only the running judge knows this one)."""
    from cai_judge.engine.factory import model_display_name
    from cai_judge.evaluation.eval_run import profile_key
    from cai_judge.labeling.calibration_profile import read_profile

    try:
        profile = read_profile(path)
        model = model_display_name(settings)
        profile.check_applies_to(profile_key(profile, model, spec, profile.key.template.version))
    except CalibrationError as error:
        raise fail(f"{error}; eval with the model and constitution it was fitted for") from None
    return profile


@asynccontextmanager
async def _judge(
    settings: Settings, registry: ConstitutionRegistry, stage: str = ""
) -> AsyncIterator[Judge]:
    console.print(f"{stage}starting the judge model {settings.model} ...")
    async with engine_session(settings, registry) as judge:
        yield judge


@asynccontextmanager
async def _tasks() -> AsyncIterator[OnTask]:
    """A progress bar per scoring run."""
    with progress() as bar:

        def on_task(name: str, total: int) -> Callable[[int], None]:
            return functools.partial(bar.advance, bar.add_task(name, total=total))

        yield on_task


def _print_scored(scored: Scored, pairs: int, stage: str = "") -> None:
    console.print(
        f"{stage}scored {pairs} pair(s) x {len(scored.runs)} run(s) in "
        f"{scored.elapsed_s:.1f} s (engine start excluded): {scored.score_units} score units"
    )


def _report_pair_errors(run: JudgeRun) -> None:
    for error in run.errors:
        report_pair_error(error, f" not scored ({run.constitution.id})")


# -- terminal tables -------------------------------------------------------------------


def _stdout() -> Console:
    # Piped into a file or a CI log, the table should not be wrapped at rich's 80 columns.
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _when_consistent(r: ProtocolReport) -> str:
    found = r.agreement_when_consistent
    return "–" if found is None else f"{fmt_pct(found.value)} (n={found.n})"


def _calibration_table(report: EvalReport) -> Table | None:
    found = report.calibrated
    if found is None:
        return None
    table = Table(
        "p_a", "ECE", "Brier", "log loss", "agree", "shorter wins", "longer wins", "longer",
        "longer | shorter wins",
        title=f"calibration profile {found.profile[:12]}",
        caption=(
            ("in-sample: this is the gold set the profile was fitted on. " if found.in_sample
             else "")
            + "longer: P(picks the longer response, in tokens), gold "
            + fmt_pct(found.gold_prefers_longer.prefers_longer)
            + "; shorter/longer wins: agreement where gold prefers the shorter/longer response"
        ),
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    rows = {row.name: row for row in found.length_rows}
    for name, metrics in (("raw", found.raw), ("calibrated", found.calibrated)):
        row = rows[name]
        table.add_row(
            name,
            fmt_num(metrics.ece),
            fmt_num(metrics.brier),
            fmt_num(metrics.log_loss),
            fmt_pct(metrics.agreement),
            fmt_pct(row.agreement_shorter_wins),
            fmt_pct(row.agreement_longer_wins),
            fmt_pct(metrics.prefers_longer.prefers_longer),
            fmt_pct(row.prefers_longer_when_shorter_wins.prefers_longer),
        )
    return table


def _eval_table(report: EvalReport) -> Table:
    # Nine columns fit a 100-column terminal; everything else is in report.json/.html.
    gold_longer = fmt_pct(report.gold.prefers_longer.prefers_longer)
    cai = report.protocols.get(Protocol.CAI) or next(iter(report.protocols.values()))
    table = Table(
        "protocol", "agree", "95% CI", "agree|cons", "shorter wins", "longer wins", "cons.",
        "bias", "Brier", "ECE", "longer",
        title=f"{report.judge.constitution.id} · {report.judge.model}",
        caption=(
            f"{report.gold.scored} gold pairs. agree|cons: agreement where every principle "
            "picks the same response in both orders; shorter/longer wins: agreement on the "
            f"pairs where gold prefers the shorter ({_half_size(report, 'shorter')}) or the "
            f"longer ({_half_size(report, 'longer')}) response, in characters; cons.: position "
            "consistency; bias: mean "
            f"position bias; longer: P(picks the longer response), gold {gold_longer}. "
            f"Answer mass ({cai.protocol}): mean {fmt_num(cai.answer_mass.mean, 2)}, min "
            f"{fmt_num(cai.answer_mass.min, 2)}, "
            f"{fmt_pct(cai.answer_mass.low_confidence_share)} low confidence"
        ),
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    for r in report.protocols.values():
        table.add_row(
            r.protocol,
            fmt_pct(r.agreement.value if r.agreement else None),
            fmt_interval(r.agreement),
            _when_consistent(r),
            fmt_pct(r.agreement_shorter_wins.value if r.agreement_shorter_wins else None),
            fmt_pct(r.agreement_longer_wins.value if r.agreement_longer_wins else None),
            fmt_num(r.position_consistency, 2),
            fmt_num(r.position_bias, 2),
            fmt_num(r.calibration.brier if r.calibration else None),
            fmt_num(r.calibration.ece if r.calibration else None),
            fmt_pct(r.length_bias.prefers_longer),
        )
    return table


def _half_size(report: EvalReport, half: str) -> str:
    """n of a length half, from the pairs' table (the same for every protocol)."""
    n = sum(
        1
        for p in report.pairs
        if p.longer is not None and (p.longer == p.gold) == (half == "longer")
    )
    return f"n={n}"


def _side_rows(r: ProtocolReport) -> list[str]:
    return [
        fmt_estimate(r.agreement),
        _when_consistent(r),
        fmt_num(r.position_consistency, 2),
        fmt_num(r.position_bias, 2),
        fmt_num(r.calibration.brier if r.calibration else None),
        fmt_num(r.calibration.ece if r.calibration else None),
        fmt_pct(r.length_bias.prefers_longer),
        fmt_num(r.answer_mass.mean, 2),
    ]


def _compare_tables(report: CompareReport, show: int) -> list[Table]:
    side = Table(
        "", f"a: {report.a.name}", f"b: {report.b.name}",
        title=f"protocol {report.protocol} · {report.compared} gold pairs",
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    metrics = (
        "agreement [95% CI]", "when consistent", "consistency", "position bias", "Brier",
        "ECE", "prefers longer", "mass mean",
    )  # fmt: skip
    for name, a, b in zip(
        metrics, _side_rows(report.a.report), _side_rows(report.b.report), strict=True
    ):
        side.add_row(name, a, b)
    side.add_row("gold prefers longer", fmt_pct(report.gold_prefers_longer.prefers_longer), "")
    side.add_row("agreement a − b", fmt_signed_estimate(report.agreement_difference), "")
    side.add_row("verdicts differ", f"{report.verdicts_differ} of {report.compared}", "")
    differ = Table(
        "id", "category", "gold", "a (p_a)", "b (p_a)",
        title=f"pairs where a and b differ (first {min(show, report.verdicts_differ)})",
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    for d in report.disagreements[:show]:
        differ.add_row(
            d.id,
            d.category or "",
            d.gold,
            f"{d.a.preferred} ({d.a.p_a:.2f})",
            f"{d.b.preferred} ({d.b.p_a:.2f})",
        )
    return [side, differ] if show > 0 and report.disagreements else [side]


# -- commands --------------------------------------------------------------------------


@_eval_flags
def eval_command(
    gold_path: GoldArgument,
    output: OutputOption,
    constitution: ConstitutionOption = DEFAULT_CONSTITUTION,
    model: ModelOption = None,
    protocol: Annotated[
        list[ProtocolChoice] | None,
        typer.Option(help="Repeat to pick several; all four by default."),
    ] = None,
    bins: BinsOption = 10,
    bootstrap: ResamplesOption = 2000,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    constitutions_dir: ConstitutionsDirOption = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            exists=True,
            dir_okay=False,
            metavar="PROFILE.json",
            help="Also report the labels of this `cai-judge calibrate` profile beside the raw.",
        ),
    ] = None,
    *,
    flags: dict[str, Any],
) -> None:
    """Measure a judge and a constitution against gold labels; write report.json/.html.

    The model runs once, with every principle in both orders; each protocol is derived
    from that one run, so protocols differ only in how they read the same numbers.
    `--protocol cot` adds a second run in CoT mode, on the same engine.
    """
    from cai_judge.evaluation.eval_run import run_eval

    settings = build_settings(model=model, constitutions_dir=constitutions_dir)
    registry = load_registry(settings)
    spec = resolve_constitution(registry, constitution)
    # Checked now, not by the scoring a minute after the engine has started.
    options = label_options(settings, **flags)
    _check_output(output)
    gold = load_gold(gold_path)
    metrics = MetricOptions(n_bins=bins, n_resamples=bootstrap, seed=options.seed)
    profile = _load_profile(calibration, settings, spec) if calibration else None

    async def run() -> EvalOutcome:
        async with _judge(settings, registry) as judge, _tasks() as on_task:
            return await run_eval(
                judge, spec, gold, gold_path, _protocols(protocol), options, metrics,
                profile=profile, batch_size=batch_size, on_task=on_task,
            )  # fmt: skip

    try:
        outcome = asyncio.run(run())
    except CalibrationError as error:
        raise fail(f"{error}; eval with the model and constitution it was fitted for") from None
    _print_scored(outcome.scored, len(gold))
    for found in outcome.scored.runs:
        _report_pair_errors(found)
    json_path, html_path = write_eval_report(outcome.report, output)
    _stdout().print(_eval_table(outcome.report))
    calibrated_table = _calibration_table(outcome.report)
    if calibrated_table is not None:
        _stdout().print(calibrated_table)
    console.print(f"wrote {json_path} and {html_path}")
    if outcome.not_scored:
        console.print(f"[red]{outcome.not_scored} gold pair(s) not scored[/red] (see above)")
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))


@_eval_flags
def compare_command(
    gold_path: GoldArgument,
    output: OutputOption,
    constitution_a: Annotated[
        str | None, typer.Option(help="Side a's constitution (default: --constitution).")
    ] = None,
    constitution_b: Annotated[
        str | None, typer.Option(help="Side b's constitution (default: --constitution).")
    ] = None,
    model_a: Annotated[
        str | None, typer.Option(help="Side a's judge model (default: --model).")
    ] = None,
    model_b: Annotated[
        str | None, typer.Option(help="Side b's judge model (default: --model).")
    ] = None,
    constitution: Annotated[
        str, typer.Option(help="The constitution of a side that names none.")
    ] = DEFAULT_CONSTITUTION,
    model: Annotated[
        str | None,
        typer.Option(help="The model of a side that names none. Env: CAI_JUDGE_MODEL."),
    ] = None,
    protocol: Annotated[Protocol, typer.Option(help="The protocol both sides use.")] = (
        Protocol.CAI
    ),
    show: Annotated[int, typer.Option(min=0, help="Differing pairs printed here.")] = 20,
    bins: BinsOption = 10,
    bootstrap: ResamplesOption = 2000,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    constitutions_dir: ConstitutionsDirOption = None,
    *,
    flags: dict[str, Any],
) -> None:
    """Compare two constitutions or two judge models on the same gold labels.

    Give --constitution-a/--constitution-b (one engine serves both) or --model-a/--model-b
    (started one after the other). Shows the metrics side by side and the pairs where the
    verdicts differ; writes compare.json and compare.html.
    """
    from cai_judge.evaluation.eval_run import Side, run_compare

    settings = build_settings(model=model, constitutions_dir=constitutions_dir)
    registry = load_registry(settings)
    a = Side(
        model_a or settings.model, resolve_constitution(registry, constitution_a or constitution)
    )
    b = Side(
        model_b or settings.model, resolve_constitution(registry, constitution_b or constitution)
    )
    options = label_options(settings, **flags)
    if (a.model, a.spec.version) == (b.model, b.spec.version):
        raise fail(
            "both sides are the same model and constitution: give --constitution-a and "
            "--constitution-b, or --model-a and --model-b"
        )
    _check_output(output)
    gold = load_gold(gold_path)
    metrics = MetricOptions(n_bins=bins, n_resamples=bootstrap, seed=options.seed)

    async def run() -> CompareOutcome:
        def open_judge(side_model: str, stage: str) -> AbstractAsyncContextManager[Judge]:
            return _judge(settings.model_copy(update={"model": side_model}), registry, stage)

        async with _tasks() as on_task:
            return await run_compare(
                open_judge, a, b, gold, gold_path, protocol, options, metrics,
                batch_size=batch_size, on_task=on_task,
            )  # fmt: skip

    outcome = asyncio.run(run())
    stages = ["a: ", "b: "] if len(outcome.sessions) == 2 else [""]
    for stage, scored in zip(stages, outcome.sessions, strict=True):
        _print_scored(scored, len(gold), stage)
    for found in outcome.runs:
        _report_pair_errors(found)
    json_path, html_path = write_compare_report(outcome.report, output)
    stdout = _stdout()
    for table in _compare_tables(outcome.report, show):
        stdout.print(table)
    console.print(f"wrote {json_path} and {html_path}")
    if any(found.errors for found in outcome.runs):
        console.print("[red]some gold pairs were not scored[/red] (see above)")
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))
