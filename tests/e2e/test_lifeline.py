"""A SIGKILLed `cai-judge serve` takes its vLLM engine processes with it (issue 33: the
engine core and its worker were found alive minutes later, holding ~6 GB)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from cai_judge.testing.service_process import start_server

# The core notices at once (a pidfd), then shuts down cleanly (SIGTERM), SIGKILLed after
# lifeline.GRACE_S (10 s) at worst; the rest is slack for a busy machine.
GONE_WITHIN_S = 45


def test_killed_server_leaves_no_engine_process(tmp_path: Path, tiny_model_dir: Path):
    server = start_server(tiny_model_dir, tmp_path / "serve.log")
    try:
        engine = psutil.Process(server.pid).children(recursive=True)
        names = [" ".join(p.cmdline())[:80] for p in engine]
        assert engine, "serve started no engine process"

        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        _gone, alive = psutil.wait_procs(engine, timeout=GONE_WITHIN_S)
        assert not alive, (
            f"alive {GONE_WITHIN_S} s after serve was killed: {alive} (of {names}); "
            f"log: {server.log_tail()}"
        )
    finally:
        server.kill()  # SIGKILL to the whole process group: whatever is left of it
