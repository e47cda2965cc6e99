"""`cai-judge serve` (the HTTP service) and `cai-judge hash-key` (its API keys)."""

from __future__ import annotations

from typing import Annotated

import typer

from cai_judge.cli.common import (
    ConstitutionsDirOption,
    ModelOption,
    build_settings,
    fail,
    load_registry,
)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("hash-key")(hash_key_command)


def serve_command(
    host: Annotated[str | None, typer.Option(help="Env: CAI_JUDGE_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Env: CAI_JUDGE_PORT.")] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics, open without a key, on this port too. "
            "Env: CAI_JUDGE_METRICS_PORT."
        ),
    ] = None,
    model: ModelOption = None,
    constitutions_dir: ConstitutionsDirOption = None,
) -> None:
    """Run the HTTP service (uvicorn); SIGTERM drains in-flight work first."""
    from cai_judge.engine.default_model import ModelNotReady
    from cai_judge.engine.factory import remote_engine_config, resolve_model_path
    from cai_judge.serve import serve as run_server

    settings = build_settings(
        host=host,
        port=port,
        metrics_port=metrics_port,
        model=model,
        constitutions_dir=constitutions_dir,
    )
    load_registry(settings)  # refuse bad constitutions before the engine starts
    try:
        resolve_model_path(settings)
        if settings.engine == "remote":
            remote_engine_config(settings)  # refuse a fleet with no URLs before serving
    except (ModelNotReady, ValueError) as error:
        raise fail(str(error)) from None
    run_server(settings)


def hash_key_command(
    key: Annotated[str, typer.Option(prompt=True, hide_input=True, help="The API key.")],
) -> None:
    """Print the sha256 digest to put in CAI_JUDGE_API_KEY_HASHES (keys are never stored)."""
    from cai_judge.services.security import hash_api_key

    typer.echo(hash_api_key(key))
