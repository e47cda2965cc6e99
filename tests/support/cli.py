"""`cai-judge` as a user runs it, for the CLI tests: a real subprocess on the test's
environment, and the JSONL files it reads and writes (DESIGN.md §6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PAIRS = [
    {"id": f"p{i}", "prompt": f"Question {i}?", "response_a": f"Answer {i}.", "response_b": "No."}
    for i in range(6)
]


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "CAI_JUDGE_MAX_MODEL_LEN": "1024",
        **(env or {}),
    }  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "cai_judge.cli.main", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def write_jsonl(path: Path, rows: list[object]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_labels(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
