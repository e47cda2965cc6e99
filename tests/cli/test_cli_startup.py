"""What `cai-judge` costs before it does anything: the modules its entry point imports, and
how it exits (issue 33: a one-pair `label` took 40 s, 18 of them before vLLM's first line).

Every command imports `cai_judge.cli.main`, so a heavy import there is paid by `--help`, by
`export` and by `label` before its engine starts. Each check runs in a fresh interpreter:
this one has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Imported only by the commands, and at the point, that need them: plots (eval, calibrate),
# Ray (label --ray), Parquet, the engine (torch, transformers, vLLM), the store (serve).
HEAVY = ("matplotlib", "PIL", "pandas", "pyarrow", "ray", "torch", "transformers", "vllm", "redis")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_cli_entry_module_imports_no_heavy_package(tmp_path: Path):
    found = _python(
        """
        import json, sys
        import cai_judge.cli.main
        print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
        """,
        tmp_path,
    )
    assert found.returncode == 0, found.stderr[-2000:]
    imported = set(json.loads(found.stdout))
    assert imported.isdisjoint(HEAVY), sorted(imported.intersection(HEAVY))


@pytest.mark.parametrize(("code", "status", "stderr"), [(None, 0, ""), (3, 3, ""), ("no", 1, "no")])
def test_exit_without_teardown_keeps_sys_exit_semantics(
    tmp_path: Path, code: object, status: int, stderr: str
):
    # Exit status and message as sys.exit gives them; atexit handlers run; buffered output
    # (a pipe is block-buffered) is flushed, not lost with the skipped teardown.
    done = _python(
        f"""
        import atexit, sys
        from cai_judge.cli.main import exit_without_teardown
        atexit.register(lambda: print("atexit ran", file=sys.stderr))
        sys.stdout.write("buffered")
        exit_without_teardown({code!r})
        """,
        tmp_path,
    )
    assert done.returncode == status
    assert done.stdout == "buffered"
    assert done.stderr.splitlines() == [*([stderr] if stderr else []), "atexit ran"]


def test_exit_without_teardown_waits_for_a_thread_that_is_not_a_daemon(tmp_path: Path):
    # The normal exit joins such a thread; leaving with os._exit would cut its work short.
    done = _python(
        """
        import threading, time
        from cai_judge.cli.main import exit_without_teardown
        def finish():
            time.sleep(0.5)
            print("thread finished", flush=True)
        threading.Thread(target=finish).start()
        exit_without_teardown(0)
        """,
        tmp_path,
    )
    assert done.returncode == 0 and done.stdout == "thread finished\n", done.stderr[-2000:]
