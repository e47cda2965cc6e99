"""The `cai-judge` command line (typer): this module only assembles the app.

Each command group lives in its own module and shares what it needs through
`cai_judge.cli.common` (DESIGN.md §8), so no command module imports another or this one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn

import typer

from cai_judge.cli import (
    calibrate_cmd,
    eval_cmd,
    export_cmd,
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
export_cmd.register(app)
revise_cmd.register(app)
eval_cmd.register(app)
calibrate_cmd.register(app)
probe_cmd.register(app)
serve_cmd.register(app)
worker_cmd.register(app)
app.add_typer(model_app, name="model")
app.add_typer(constitutions_app, name="constitutions")


def _exit_status(code: object) -> int:
    """SystemExit's code as the interpreter turns it into a status (a message is printed)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_without_teardown(code: object) -> NoReturn:
    """Exit as `sys.exit(code)` would, minus the interpreter's teardown of its modules.

    With torch, transformers and vLLM imported, that teardown (clearing thousands of
    modules, collecting their objects) takes 2 s on an idle machine and 7 s on a busy one,
    after the command's work is done and its files are closed. The atexit handlers still run
    (logging's flush, multiprocessing's reaping of children, vLLM's and Ray's shutdowns), and
    the standard streams are flushed; a thread that is not a daemon is still waited for, by
    leaving through the normal exit whenever one is alive.
    """
    status = _exit_status(code)
    main = threading.main_thread()
    if any(t is not main and not t.daemon for t in threading.enumerate()):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken pipe: there is no one left to tell.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def run() -> NoReturn:
    # The console-script entry point: vLLM spawns worker processes that re-import
    # __main__, and the generated script keeps its call under a __main__ guard.
    try:
        app()
    except SystemExit as stop:
        exit_without_teardown(stop.code)
    exit_without_teardown(0)


if __name__ == "__main__":
    run()
