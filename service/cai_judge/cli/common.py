"""What every `cai-judge` command shares: the console, exit codes, settings, the
constitution registry, option aliases, and the one way to start and stop the engine.

Command modules import from here and never from each other or from `main`, which only
assembles the app (DESIGN.md §8): an import between command modules would make one
command's module half-built while another reads it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from enum import Enum, IntEnum, StrEnum
from pathlib import Path
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    NoReturn,
    Protocol,
    Union,
    get_args,
    get_origin,
)

import annotated_types
import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cai_judge.labeling.constitution import (
    ConstitutionError,
    ConstitutionNotFound,
    ConstitutionRegistry,
    ConstitutionSpec,
)
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


# -- flags derived from the options' fields (DESIGN.md §8) -----------------------------
#
# As vLLM's `EngineArgs.add_cli_args` reads each dataclass field's type, default and help
# (`arg_utils.get_kwargs`), a command's label flags are read from LabelOptions' fields: a
# default, a bound or a help text is written once, on the field, and a field added there
# is a flag of every command that takes the label options.

# LabelOptions fields no flag sets: the constitution is a flag of its own (the CLI names a
# default one), `calibrated` is the CLI's --calibration PROFILE.json, and the server's
# tuning comes from the CAI_JUDGE_* settings (`LabelOptions.tuned`).
NOT_FLAGS = frozenset({"constitution", "calibrated", "low_mass_threshold", "cot_max_probability"})


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _members(annotation: Any) -> list[Any]:
    """A union's members (None left out), or the annotation itself."""
    if get_origin(annotation) in (Union, UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """`Annotated[int, Field(ge=1)]` -> (int, [Ge(1)]): the type and its constraints."""
    if get_origin(annotation) is not Annotated:
        return annotation, []
    base, *extras = get_args(annotation)
    metadata: list[Any] = []
    for extra in extras:
        metadata.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
    return base, metadata


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    # Open bounds (gt, lt) have no typer form: the model refuses those values itself.
    bounds: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            bounds["min"] = m.ge
        elif isinstance(m, annotated_types.Le):
            bounds["max"] = m.le
    return bounds


def _flag(model: type[BaseModel], name: str, help_text: str | None) -> inspect.Parameter:
    """One typer option for one model field: its type, default, bounds and help."""
    info = model.model_fields[name]
    members = _members(info.annotation)
    optional = len(members) < len(get_args(info.annotation)) or info.default is None
    kwargs: dict[str, Any] = {"help": help_text or info.description}
    default = info.default
    flag_type: Any = str
    if len(members) > 1:
        pass  # A union (`int | "all"`) has no click type: text, read by `flag_value`.
    else:
        base, metadata = _unwrap(members[0])
        if get_origin(base) is Literal:
            # typer lists an enum's choices: the literal's values as one (`flag_value`
            # hands the field the value again).
            values = [str(v) for v in get_args(base)]
            choices = StrEnum(name.title().replace("_", ""), {v: v for v in values})  # type: ignore[misc]
            flag_type, default = choices, choices(default)
        else:
            flag_type = base
            # pydantic keeps a plain field's constraints on the field, a union member's
            # in the member's Annotated.
            kwargs.update(_bounds([*metadata, *info.metadata]))
    # Built at run time from the field, so not a type a checker can follow.
    annotation = Annotated[flag_type | None if optional else flag_type, typer.Option(**kwargs)]  # type: ignore[valid-type]
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def flag_value(model: type[BaseModel], name: str, value: Any, option: str = "") -> Any:
    """A flag's value as the field takes it: a union's text becomes the literal it names,
    or a number (the model then checks its bounds); anything else is as typer parsed it."""
    members = _members(model.model_fields[name].annotation)
    if len(members) < 2:
        is_literal = get_origin(_unwrap(members[0])[0]) is Literal
        return value.value if is_literal and isinstance(value, Enum) else value
    if not isinstance(value, str):
        return value
    literals = [v for m in members if get_origin(m) is Literal for v in get_args(m)]
    if value in literals:
        return value
    try:
        return int(value)
    except ValueError:
        bounds = _bounds([x for m in members for x in _unwrap(m)[1]])
        named = " or ".join(f"`{v}`" for v in literals)
        usage_error(
            option or flag_name(name),
            f"must be {named} or a number from {bounds.get('min')} to {bounds.get('max')}",
        )


def model_flags(
    model: type[BaseModel],
    *,
    into: str = "flags",
    only: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    help: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one flag per field of `model` (all but `exclude`, or `only` these);
    the command receives their values as one dict, its keyword argument `into`.

    `help` replaces a field's description where a command reads the option its own way.
    """
    names = [n for n in model.model_fields if n not in exclude and (only is None or n in only)]
    params = [_flag(model, n, (help or {}).get(n)) for n in names]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != into]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            kwargs[into] = {n: flag_value(model, n, kwargs.pop(n)) for n in names}
            command(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*own, *params])  # type: ignore[attr-defined]
        return wrapper

    return decorate


def label_flags(
    *,
    only: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    help: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The label options' flags (`model_flags` over LabelOptions, NOT_FLAGS left out), for
    `label_options(settings, **flags)`."""
    return model_flags(LabelOptions, only=only, exclude=(*NOT_FLAGS, *exclude), help=help)


# LabelOptions fields whose value does not come from a flag of the same name.
_LABEL_OPTION_SOURCES = {"low_mass_threshold": "CAI_JUDGE_LOW_MASS_THRESHOLD"}


def label_options(settings: Settings | None = None, **values: Any) -> LabelOptions:
    """LabelOptions from command-line values (with `settings`, the server's tuning too); a
    value it refuses is a usage error that names the option and the limit, checked by the
    model itself so the CLI and the API can never disagree on a bound."""
    if settings is not None:
        values.setdefault("low_mass_threshold", settings.low_mass_threshold)
        values.setdefault("cot_max_probability", settings.cot_max_probability)
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


class _NumberedProblem(Protocol):
    @property
    def line_number(self) -> int: ...
    @property
    def reason(self) -> str: ...


def report_bad_lines(path: Path | str, bad_lines: Sequence[_NumberedProblem]) -> None:
    """Each bad line of an input file, by its number: the rest of the file is still used."""
    for bad in bad_lines:
        console.print(f"[yellow]{path}:{bad.line_number}[/yellow]: {bad.reason}", highlight=False)


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
BatchSizeOption = Annotated[int, typer.Option(min=1, help="Pairs per engine call.")]
CalibrationOption = Annotated[
    Path | None,
    typer.Option(
        "--calibration",
        exists=True,
        dir_okay=False,
        metavar="PROFILE.json",
        help="A `cai-judge calibrate` profile: p_a, margin and preferred come from it, the "
        "raw numbers are kept in each label's `calibration`.",
    ),
]
DEFAULT_BATCH_SIZE = 32
# The constitution a command uses when none is named.
DEFAULT_CONSTITUTION = "harmless"


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
