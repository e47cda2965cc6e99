"""Shared helpers for the benchmarks: distinct pairs, process-tree memory."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "pairs.jsonl"
RESULTS = ROOT / "bench" / "results"


def make_pairs(count: int, offset: int = 0) -> list[dict[str, Any]]:
    """`count` pairs from the examples, each with a prompt no other pair has.

    Distinct prompts keep one measurement from warming the prefix cache for the next.
    """
    base = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    pairs = []
    for i in range(offset, offset + count):
        pair = dict(base[i % len(base)])
        pair["id"] = f"{pair['id']}-v{i}"
        tag = f" (variant {i})"
        if isinstance(pair["prompt"], str):
            pair["prompt"] = pair["prompt"] + tag
        else:
            messages = [dict(m) for m in pair["prompt"]]
            messages[-1]["content"] += tag
            pair["prompt"] = messages
        pairs.append(pair)
    return pairs


def tree_rss(pid: int) -> int:
    total = 0
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for process in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):  # exited while we looked
                total += process.memory_info().rss
    return total


class PeakRss:
    """Polls the RSS of a process tree in a thread; `.peak` is the maximum seen."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
