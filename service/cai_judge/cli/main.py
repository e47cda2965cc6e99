"""The `cai-judge` command line (typer): this module only assembles the app.

Each command group lives in its own module and shares what it needs through
`cai_judge.cli.common` (DESIGN.md §8), so no command module imports another or this one.
"""

from __future__ import annotations

import sys

import typer

from cai_judge.cli import (
    calibrate_cmd,
    eval_cmd,
    label_cmd,
    probe_cmd,
    revise_cmd,
    serve_cmd,
    worker_cmd,
)
from cai_judge.cli.constitutions_cmd import constitutions_app
from cai_judge.cli.model_cmd import model_app

app = typer.Typer(
    help="Constitutional-AI preference labels from a vLLM judge model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
label_cmd.register(app)
revise_cmd.register(app)
eval_cmd.register(app)
calibrate_cmd.register(app)
probe_cmd.register(app)
serve_cmd.register(app)
worker_cmd.register(app)
app.add_typer(model_app, name="model")
app.add_typer(constitutions_app, name="constitutions")


def run() -> None:
    # The console-script entry point: vLLM spawns worker processes that re-import
    # __main__, and the generated script keeps its call under a __main__ guard.
    app()


if __name__ == "__main__":
    sys.exit(run())  # type: ignore[func-returns-value]
