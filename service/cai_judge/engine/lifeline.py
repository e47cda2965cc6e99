"""vLLM's engine-core process ends when the process that started it dies, however it dies.

AsyncLLM runs its engine core (and, through it, the CPU worker) in child processes. A
`serve` or `worker` that is SIGKILLed (the OOM killer, `kill -9`, a node agent) runs no
shutdown, and vLLM's core does not watch its parent: it was found alive minutes later, with
its worker and ~6 GB (issue 33). The worker does watch the core (vLLM's death pipe), so
ending the core ends both.

How: the core process's entry point (`EngineCoreProc.run_engine_core`, the target vLLM
hands to multiprocessing) is wrapped by `install`, so the core starts a watcher thread on
its parent before anything else. The wrapper is a module-level function, pickled by name,
so it runs in the child under `spawn` as under `fork`. The thread waits on a pidfd of the
parent (readable once that *process* has exited; `PR_SET_PDEATHSIG` would instead fire
when the parent *thread* that forked it exits, and vLLM may start the core from any
thread), or, where pidfds are missing, polls for the parent's pid to change. Then it sends
the core SIGTERM (vLLM's clean shutdown, which stops its worker) and, if it is still alive
`GRACE_S` later, SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from typing import Any

GRACE_S = 10.0
POLL_S = 1.0

# The unwrapped entry point, in the process that installed the wrapper and in its forked
# children; a spawned child imports vLLM afresh, whose class holds the original.
_original: Any = None


def _wait_for_exit(parent: int) -> None:
    try:
        handle = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3), or already gone
        handle = None
    if handle is not None and os.getppid() == parent:  # else: it died before the open
        with contextlib.suppress(OSError):
            select.select([handle], [], [])
        os.close(handle)
        return
    while os.getppid() == parent:  # reparented once the parent is gone
        time.sleep(POLL_S)


def _end_with(parent: int) -> None:
    _wait_for_exit(parent)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os.kill(os.getpid(), signal.SIGKILL)


def tie_to_parent() -> threading.Thread:
    """End this process (SIGTERM, then SIGKILL) once its parent process has exited."""
    watcher = threading.Thread(
        target=_end_with, args=(os.getppid(),), name="parent-watch", daemon=True
    )
    watcher.start()
    return watcher


def run_engine_core(*args: Any, **kwargs: Any) -> Any:
    """vLLM's engine-core entry point, tied to the process that started it."""
    tie_to_parent()
    if _original is not None:
        return _original(*args, **kwargs)
    from vllm.v1.engine.core import EngineCoreProc

    return EngineCoreProc.run_engine_core(*args, **kwargs)


def install() -> None:
    """Start every later engine core of this process through `run_engine_core`."""
    global _original
    from vllm.v1.engine.core import EngineCoreProc

    if _original is None:
        _original = EngineCoreProc.run_engine_core
        EngineCoreProc.run_engine_core = staticmethod(run_engine_core)  # type: ignore[method-assign]
