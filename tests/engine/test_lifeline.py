"""`engine.lifeline.tie_to_parent` without vLLM: a child tied to its parent lives as long as
the parent process does, even after the thread that started it has exited, and ends within
seconds of the parent being SIGKILLed (the engine core's case, tests/e2e/test_lifeline.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

# The parent starts the tied child from a thread that then exits (PR_SET_PDEATHSIG would
# end the child there), prints the child's pid, and lives until killed.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, threading, time
    CHILD = "from cai_judge.engine.lifeline import tie_to_parent; import time; "
    CHILD += "tie_to_parent(); print('tied', flush=True); time.sleep(600)"
    started = []
    def start():
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
        child.stdout.readline()
        started.append(child.pid)
    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    print(started[0], flush=True)
    time.sleep(600)
    """
)


def test_tied_child_outlives_its_starting_thread_and_dies_with_the_parent(tmp_path: Path):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        time.sleep(1.5)  # longer than the watcher's poll, were it polling
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE

        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        _gone, alive = psutil.wait_procs([child], timeout=15)
        assert not alive, f"the child outlived its parent by 15 s: {alive}"
    finally:
        # Whatever failed above: nothing of this test is left running.
        with_group = [p for p in psutil.process_iter() if _in_group(p, parent.pid)]
        for process in with_group:
            process.kill()
        parent.kill()
        parent.wait(timeout=10)


def _in_group(process: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(process.pid) == group
    except (ProcessLookupError, psutil.Error):
        return False
