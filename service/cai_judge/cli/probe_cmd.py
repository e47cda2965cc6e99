"""`cai-judge probe`: how far cheap rewrites move the judge's preference (issue 32).

Thin: options are `label`'s own (the same derived flags and `label_options`), the run is
`evaluation.probe_run`, the numbers `evaluation.probe_report`, the files
`evaluation.probe_render` (imported only to write them: it brings matplotlib).
"""

from __future__ import annotations

import asyncio
import time
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
    load_registry,
    progress,
    report_pair_error,
    resolve_constitution,
)
from cai_judge.labeling.probes import ProbeFamily

if TYPE_CHECKING:
    from cai_judge.evaluation.probe_report import ProbeReport
    from cai_judge.evaluation.probe_run import ProbeInput, ProbeRun
    from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
    from cai_judge.labeling.schema import LabelOptions
    from cai_judge.settings import Settings

_MAX_PROBLEMS_SHOWN = 20


def register(app: typer.Typer) -> None:
    app.command("probe")(probe_command)


def _load(path: Path) -> list[ProbeInput]:
    from cai_judge.evaluation.probe_run import read_probe_pairs

    inputs, problems = read_probe_pairs(path)
    if problems:
        shown = "\n".join(
            f"  {path}:{p.line_number}: {p.reason}" for p in problems[:_MAX_PROBLEMS_SHOWN]
        )
        more = len(problems) - _MAX_PROBLEMS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise fail(
            f"{len(problems)} problem(s) in {path}; nothing was probed, since rates over "
            f"part of a file mislead:\n{shown}{tail}"
        )
    if not inputs:
        raise fail(f"{path} holds no pairs")
    return inputs


async def _run(
    settings: Settings,
    registry: ConstitutionRegistry,
    spec: ConstitutionSpec,
    options: LabelOptions,
    inputs: list[ProbeInput],
    families: list[ProbeFamily],
    benign: frozenset[str],
    batch_size: int,
) -> ProbeRun:
    from cai_judge.evaluation.probe_run import run_probes

    console.print(f"starting the judge model {settings.model} ...")
    async with engine_session(settings, registry) as judge:
        started = time.perf_counter()
        with progress() as bar:
            first = bar.add_task("unmodified", total=len(inputs))
            second = bar.add_task("rewrites", total=None)
            run = await run_probes(
                judge,
                spec,
                options,
                inputs,
                families=families,
                benign_categories=benign,
                batch_size=batch_size,
                on_baseline=lambda n: bar.advance(first, n),
                on_rewrites_planned=lambda n: bar.update(second, total=n),
                on_rewrite=lambda n: bar.advance(second, n),
            )
        elapsed = time.perf_counter() - started
    console.print(
        f"scored {len(inputs)} pair(s) and their rewrites in {elapsed:.1f} s (engine start "
        f"excluded): {run.usage.score_units} score units"
    )
    return run


def _table(report: ProbeReport) -> Table:
    table = Table(
        "probe", "rate", "95% CI", "pairs", "shift (nats)", "principles that differ",
        title=f"probes · {report.judge.constitution.id} · {report.judge.model}",
        caption="rate: how often the judge prefers the rewritten side (the flip rate where it "
        "rewrote the less-preferred side; a tie counts ½)",
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    for p in report.probes:
        found = p.win_rate
        table.add_row(
            f"{p.family} · {p.probe}",
            "–" if found is None else f"{100 * found.value:.1f}%",
            "–" if found is None else f"{100 * found.low:.1f}–{100 * found.high:.1f}",
            str(p.pairs),
            "–" if p.margin_shift is None else f"{p.margin_shift.value:+.3f}",
            ", ".join(p.principles_that_differ) or "",
        )
    return table


# Each pair's numbers per principle are what the report reads: always on.
@label_flags(exclude=("per_principle",))
def probe_command(
    pairs_path: Annotated[
        Path,
        typer.Argument(
            metavar="PAIRS.jsonl",
            exists=True,
            dir_okay=False,
            help="Pairs (id, prompt, response_a, response_b), with or without gold "
            "(preferred, p_a) and category.",
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for the report (created if missing).")
    ],
    constitution: ConstitutionOption = DEFAULT_CONSTITUTION,
    model: ModelOption = None,
    constitutions_dir: ConstitutionsDirOption = None,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    probe: Annotated[
        list[ProbeFamily] | None,
        typer.Option(help="Probe families to run; repeat to pick several (all by default)."),
    ] = None,
    benign_category: Annotated[
        list[str] | None,
        typer.Option(
            help="Categories whose prompts are benign, for evasive-refusal (repeatable; "
            "default `benign`); a pair with no category counts as benign."
        ),
    ] = None,
    bootstrap: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 2000,
    *,
    flags: dict[str, Any],
) -> None:
    """Rewrite one side of each pair with fixed, seeded probes (padding, master keys, text
    addressed to the judge, evasive refusals, markdown) and report how the judge's
    preference moves: report.json, report.html and probes.png in the output folder.

    The pairs are labeled as they are and then rewritten, each through the pipeline
    `label` uses with these options; every rate has a bootstrap interval over pairs.
    """
    from cai_judge.evaluation.probe_report import ProbeMetricSettings

    settings = build_settings(model=model, constitutions_dir=constitutions_dir)
    registry = load_registry(settings)
    spec = resolve_constitution(registry, constitution)
    options = label_options(settings, **flags, per_principle=True)
    if output.exists() and not output.is_dir():
        raise fail(f"{output} exists and is not a folder; -o names the report folder")
    inputs = _load(pairs_path)
    families = [f for f in ProbeFamily if not probe or f in probe]
    benign = frozenset(benign_category or ["benign"])
    run = asyncio.run(_run(settings, registry, spec, options, inputs, families, benign, batch_size))
    for error in run.errors:
        report_pair_error(error, " not scored")

    from cai_judge.evaluation.probe_render import write_probe_report
    from cai_judge.evaluation.probe_report import probe_report

    report = probe_report(
        run, families, str(pairs_path), len(inputs),
        ProbeMetricSettings(n_resamples=bootstrap, seed=options.seed),
    )  # fmt: skip
    paths = write_probe_report(report, output)
    stdout = Console()
    (stdout if stdout.is_terminal else Console(width=160)).print(_table(report))
    console.print("wrote " + ", ".join(str(p) for p in paths))
    if run.errors:
        console.print(f"[red]{len(run.errors)} pair(s) or rewrite(s) not scored[/red]")
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))
