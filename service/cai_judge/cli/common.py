"""What every `cai-judge` command shares: the console, exit codes, settings, the
constitution registry, option aliases, and the one way to start and stop the engine.

Command modules import from here and never from each other or from `main`, which only
assembles the app (DESIGN.md §8): an import between command modules would make one
command's module half-built while another reads it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cai_judge.constants import MAX_PRINCIPLES, MAX_SEED
from cai_judge.labeling.constitution import (
    ConstitutionError,
    ConstitutionNotFound,
    ConstitutionRegistry,
    ConstitutionSpec,
)
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.schema import LabelOptions, PairError
from cai_judge.labeling.validation import field_problems
from cai_judge.settings import Settings

if TYPE_CHECKING:
    from cai_judge.evaluation.gold import GoldPair
    from cai_judge.labeling.judge import Judge

# soft_wrap: error lines stay whole lines, so logs and grep see them intact.
console = Console(stderr=True, soft_wrap=True)


class ExitCode(IntEnum):
    OK = 0
    SOME_PAIRS_FAILED = 1
    USAGE = 2
    # `calibrate`: the fit ran, but no profile could be written (the report says why).
    NO_PROFILE = 3


def fail(message: str, code: ExitCode = ExitCode.USAGE) -> typer.Exit:
    """Print `message` as an error; the caller raises the returned exit (`raise fail(...)`),
    so type checkers see that the command stops there."""
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(int(code))


def usage_error(option: str, message: str) -> NoReturn:
    # Typer's own usage error: printed like its checks of option types and ranges (the
    # option named, exit 2), not as a traceback.
    raise typer.BadParameter(message, param_hint=f"'{option}'")


def _option_name(field: str, flags: Mapping[str, str], env_prefix: str = "") -> str:
    if field in flags:
        return flags[field]
    return f"{env_prefix}{field.upper()}" if env_prefix else "--" + field.replace("_", "-")


def _first_field_problem(error: ValidationError) -> tuple[str, str]:
    """The first field at fault and what is wrong with it, in the one wording every
    transport uses (`labeling.validation`)."""
    return field_problems(error.errors())[0]


def build_settings(**overrides: object) -> Settings:
    """Settings from CAI_JUDGE_* variables, with the command line's non-None values on top."""
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as error:
        field, problem = _first_field_problem(error)
        if not field:  # a rule over several settings (Settings' model validators)
            raise fail(f"invalid settings: {problem.removeprefix('Value error, ')}") from None
        # A flag the user typed is named as the flag; anything else came from the environment.
        if field in values:
            usage_error(_option_name(field, {}), problem)
        raise fail(f"invalid setting {_option_name(field, {}, 'CAI_JUDGE_')}: {problem}") from None


def load_registry(settings: Settings) -> ConstitutionRegistry:
    extra = [settings.constitutions_dir] if settings.constitutions_dir else []
    try:
        return ConstitutionRegistry.with_builtins(extra)
    except ConstitutionError as error:
        raise fail(str(error)) from None


def resolve_constitution(registry: ConstitutionRegistry, ref: str) -> ConstitutionSpec:
    try:
        return registry.resolve(ref)
    except ConstitutionNotFound as error:
        raise fail(str(error)) from None


def parse_principles(value: str) -> int | str:
    if value == "all":
        return "all"
    try:
        return int(value)
    except ValueError:
        usage_error("--principles", f"must be `all` or a number from 1 to {MAX_PRINCIPLES}")


# LabelOptions fields whose value does not come from a flag of the same name.
_LABEL_OPTION_SOURCES = {"low_mass_threshold": "CAI_JUDGE_LOW_MASS_THRESHOLD"}


def label_options(**values: Any) -> LabelOptions:
    """LabelOptions from command-line values; a value it refuses is a usage error that
    names the option and the limit, checked by the model itself so the CLI and the API
    can never disagree on a bound."""
    try:
        return LabelOptions(**values)
    except ValidationError as error:
        field, problem = _first_field_problem(error)
        if not field:  # a rule over several settings (Settings' model validators)
            raise fail(f"invalid settings: {problem.removeprefix('Value error, ')}") from None
        usage_error(_option_name(field, _LABEL_OPTION_SOURCES), problem)


# Problems listed before "... and N more": enough to fix a file in one pass, not a flood.
_MAX_PROBLEMS_SHOWN = 20


def load_gold(path: Path) -> list[GoldPair]:
    """A gold file, refused whole on any bad line (`eval`, `compare`, `calibrate`)."""
    from cai_judge.evaluation.gold import read_gold

    gold = read_gold(path)
    if gold.problems:
        shown = "\n".join(
            f"  {path}:{p.line_number}: {p.reason}" for p in gold.problems[:_MAX_PROBLEMS_SHOWN]
        )
        more = len(gold.problems) - _MAX_PROBLEMS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise fail(
            f"{len(gold.problems)} problem(s) in gold file {path}; nothing was scored, since "
            f"metrics over part of a gold set mislead:\n{shown}{tail}"
        )
    if not gold.pairs:
        raise fail(f"gold file {path} holds no pairs")
    return gold.pairs


# -- options shared by several commands -----------------------------------------------

ModelOption = Annotated[
    str | None,
    typer.Option(
        help="`default`, a local checkpoint directory, or a hub ID. Env: CAI_JUDGE_MODEL."
    ),
]
ConstitutionsDirOption = Annotated[
    Path | None, typer.Option(help="Extra folder of constitution YAML files.")
]
ConstitutionOption = Annotated[str, typer.Option(help="`id` or `id@version`.")]
PrinciplesOption = Annotated[
    str,
    typer.Option(help=f"`all`, or k principles sampled per pair (1 to {MAX_PRINCIPLES})."),
]
SeedOption = Annotated[
    int,
    typer.Option(
        min=0,
        max=MAX_SEED,
        help="Seeds every random choice (principle sampling; eval's coin and bootstrap).",
    ),
]
AggregatorOption = Annotated[Aggregator, typer.Option(help="How principles' margins combine.")]
BatchSizeOption = Annotated[int, typer.Option(min=1, help="Pairs per engine call.")]


# -- the engine ----------------------------------------------------------------------


def progress(label: str = "{task.description}") -> Progress:
    columns = (
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("pairs"),
        TimeRemainingColumn(),
    )  # fmt: skip
    return Progress(*columns, console=console)


def report_pair_error(error: PairError, note: str = "") -> None:
    console.print(
        f"[yellow]pair {error.id!r}[/yellow]{note}: {error.error.message}", highlight=False
    )


@asynccontextmanager
async def engine_session(
    settings: Settings, registry: ConstitutionRegistry
) -> AsyncIterator[Judge]:
    """Start the configured engine and a Judge on it; both are shut down on the way out,
    whatever happens inside. A model that is not ready is a clean exit 2, not a traceback."""
    from cai_judge.engine.default_model import ModelNotReady
    from cai_judge.engine.factory import start_engine
    from cai_judge.labeling.judge import Judge
    from cai_judge.labeling.templates import TemplateError

    try:
        engine = await start_engine(settings, serving=False)
    except (ModelNotReady, ValueError) as error:
        raise fail(str(error)) from None
    try:
        try:
            judge = Judge(engine, registry, settings.use_chat_template())
        except TemplateError as error:
            raise fail(f"the judge model cannot use the judge template: {error}") from None
        try:
            yield judge
        finally:
            # Its tokenizing thread first: it must not outlive the engine it plans for.
            judge.close()
    finally:
        await engine.shutdown()
