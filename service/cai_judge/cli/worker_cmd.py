"""`cai-judge worker`: label batch jobs from Redis with no HTTP front."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from cai_judge.cli.common import ConstitutionsDirOption, ModelOption, build_settings, fail


def register(app: typer.Typer) -> None:
    app.command("worker")(worker_command)


def worker_command(
    redis_url: Annotated[str | None, typer.Option(help="Env: CAI_JUDGE_REDIS_URL.")] = None,
    model: ModelOption = None,
    constitutions_dir: ConstitutionsDirOption = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /metrics (Prometheus) on this port.")
    ] = None,
) -> None:
    """Consume batch jobs from Redis on this node's engine until SIGTERM (no HTTP API)."""
    from cai_judge.engine.default_model import ModelNotReady
    from cai_judge.engine.factory import resolve_model_path
    from cai_judge.worker import WorkerError, run_worker

    settings = build_settings(redis_url=redis_url, model=model, constitutions_dir=constitutions_dir)
    try:
        resolve_model_path(settings)
    except ModelNotReady as error:
        raise fail(str(error)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(run_worker(settings, metrics_port))
    except WorkerError as error:
        raise fail(str(error)) from None
