"""`cai-judge constitutions list|show|check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cai_judge.cli.common import (
    ConstitutionsDirOption,
    ExitCode,
    build_settings,
    console,
    load_registry,
    resolve_constitution,
)
from cai_judge.labeling.constitution import ConstitutionError, load_constitution_file

constitutions_app = typer.Typer(help="List, show and check constitutions.")


@constitutions_app.command("list")
def constitutions_list(constitutions_dir: ConstitutionsDirOption = None) -> None:
    """Every constitution with its latest version."""
    registry = load_registry(build_settings(constitutions_dir=constitutions_dir))
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
    registry = load_registry(build_settings(constitutions_dir=constitutions_dir))
    spec = resolve_constitution(registry, ref)
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
