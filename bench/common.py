"""Shared helpers for the benchmarks: distinct pairs and groups, a served judge, percentiles,
process-tree memory. Processes are started through cai_judge/testing/, never tests/."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from cai_judge.testing.service_process import ServiceProcess

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


def make_groups(prompts: int, size: int, tag: str) -> list[dict[str, Any]]:
    """`prompts` groups of `size` distinct completions: the examples' two responses and
    shortened, lengthened and empty variants of them, as a policy's samples differ. Each
    prompt is tagged with `tag`, so no other measurement shares its cache; `reference` is
    the example's first response (reference mode)."""
    base = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    groups = []
    for i in range(prompts):
        pair = base[i % len(base)]
        a, b = pair["response_a"], pair["response_b"]
        pool = [a, b, a[: len(a) // 2], b[: len(b) // 2], "", a + " " + b, b + " Thanks!",
                "I am not sure.", a.upper(), b.lower()]  # fmt: skip
        completions = [f"{pool[j % len(pool)]}" + (f" ({j})" if j >= len(pool) else "")
                       for j in range(size)]  # fmt: skip
        prompt = pair["prompt"]
        if isinstance(prompt, str):
            prompt = f"{prompt} [{tag} {i}]"
        else:
            prompt = [dict(m) for m in prompt]
            prompt[-1]["content"] += f" [{tag} {i}]"
        groups.append({"id": f"g{i}", "prompt": prompt, "completions": completions, "reference": a})
    return groups


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def serve(model_dir: str, **settings: str) -> Iterator[str]:
    """`cai-judge serve` with its defaults but a free port, the model and `settings`
    (`CAI_JUDGE_*` names without the prefix): its URL until the block ends, then SIGTERM
    (a drain) and up to two minutes for it to finish."""
    server = ServiceProcess(settings={"model": model_dir, **settings}).start(timeout_s=600)
    try:
        yield server.url
    finally:
        server.stop(signal.SIGTERM, wait_s=120)


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
