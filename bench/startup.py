"""Cold start of `cai-judge label` for one pair, and what the in-process engine core costs.

    .venv/bin/python -m bench.startup            # ~4 min on the 2-core CI machine
    .venv/bin/python -m bench.startup --cold     # first run after dropping the page cache

Part 1, as a new user runs it: `cai-judge label one.jsonl -o out.jsonl` (one pair, every
principle of `harmless`, the default model), timed from the command to the first label in
the output file and to the process's exit, with the engine core in this process (the
CLI's default) and in its own process (`CAI_JUDGE_ENGINE_CORE=subprocess`, AsyncLLM, as
the CLI once did), alternating. The log is searched for vLLM's forced kill at shutdown.

Part 2, throughput: the same CLI labels the 24 example pairs at K=4 with each engine core,
alternating; the CLI's own "labeled N pair(s) in S s" line (engine start excluded) gives
pairs/s, and the ratio is taken within each round. Peak RSS is the whole process tree.

Writes bench/results/startup.json and bench/startup.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import EXAMPLES, RESULTS, ROOT, PeakRss

CORES = ("in-process", "subprocess")


def drop_page_cache() -> bool:
    """Empty the kernel's page cache, so imports and weights come from disk (root only)."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def run_label(core: str, pairs: Path, output: Path, principles: str) -> dict[str, Any]:
    """One `cai-judge label` run: wall time to its first label and to its exit."""
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", "cai_judge.cli.main", "label", str(pairs), "-o",
               str(output), "--principles", principles]  # fmt: skip
    environment = {**os.environ, "CAI_JUDGE_ENGINE_CORE": core}
    started = time.perf_counter()
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)
    lines: list[tuple[float, str]] = []

    def read_log() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            lines.append((time.perf_counter() - started, line.rstrip()))

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    first_label = None
    with PeakRss(child.pid, interval_s=0.1) as memory:
        while child.poll() is None:
            if first_label is None and output.exists() and output.read_text().strip():
                first_label = time.perf_counter() - started
            time.sleep(0.05)
    exited = time.perf_counter() - started
    reader.join()
    log = "\n".join(line for _, line in lines)
    if child.returncode != 0:
        sys.exit(f"cai-judge label failed ({child.returncode}):\n{log[-3000:]}")
    if first_label is None:  # written in the last 50 ms before exit
        first_label = exited
    model_load = next((t for t, line in lines if "Loading safetensors" in line), None)
    labeled = re.search(r"labeled (\d+) pair\(s\) in ([\d.]+) s \(([\d.]+) pairs/s", log)
    return {
        "core": core,
        "first_label_s": round(first_label, 2),
        "exit_s": round(exited, 2),
        "model_load_starts_s": round(model_load, 2) if model_load else None,
        "labeling_s": float(labeled.group(2)) if labeled else None,
        "pairs_per_s": float(labeled.group(3)) if labeled else None,
        "forced_kill": "force killing" in log,
        "processes_peak_rss_gib": round(memory.peak / 2**30, 2),
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (f"engine core {core}\n(page cache warm)", result["cold_start"][core]) for core in CORES
    ]
    rows += [
        (f"engine core {core}\n(page cache dropped)", run)
        for core, run in (result.get("cold_disk") or {}).items()
        if run is not None
    ]
    figure, axis = plt.subplots(figsize=(8, 1.0 + 0.7 * len(rows)))
    for row, (_, summary) in enumerate(rows):
        first, total = summary["first_label_s"], summary["exit_s"]
        axis.barh(
            row, first, color="tab:blue", label="command to first label" if row == 0 else None
        )
        axis.barh(row, total - first, left=first, color="tab:gray",
                  label="first label to exit" if row == 0 else None)  # fmt: skip
        axis.text(total + 0.3, row, f"{first:.1f} s / {total:.1f} s", va="center", fontsize=8)
    axis.axvline(30, color="tab:red", linestyle=":", label="target: 30 s")
    axis.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    axis.set_xlim(0, max(40.0, max(s["exit_s"] for _, s in rows) + 10))
    axis.set_xlabel("seconds (warm: median of runs; dropped: one run)")
    axis.set_title("cai-judge label, one pair, all 16 principles, default model", fontsize=10)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="cold-start runs per engine core")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per core")
    parser.add_argument("--cold", action="store_true", help="drop the page cache first")
    parser.add_argument("--replot", action="store_true", help="redraw the plot from --out")
    parser.add_argument("--out", type=Path, default=RESULTS / "startup.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "startup.png")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.out.read_text()), args.plot)
        return

    result: dict[str, Any] = {"runs": args.runs, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as scratch:
        one = Path(scratch) / "one.jsonl"
        one.write_text(EXAMPLES.read_text().splitlines()[0] + "\n")
        output = Path(scratch) / "labels.jsonl"
        if args.cold:
            result["cold_disk"] = {
                core: run_label(core, one, output, "all") if drop_page_cache() else None
                for core in CORES
            }
        runs = [run_label(core, one, output, "all") for _ in range(args.runs) for core in CORES]
        result["cold_start"] = {
            core: {
                "first_label_s": _median([r for r in runs if r["core"] == core], "first_label_s"),
                "exit_s": _median([r for r in runs if r["core"] == core], "exit_s"),
                "forced_kills": sum(r["forced_kill"] for r in runs if r["core"] == core),
                "runs": [r for r in runs if r["core"] == core],
            }
            for core in CORES
        }
        rounds = [
            {core: run_label(core, EXAMPLES, output, "4") for core in CORES}
            for _ in range(args.rounds)
        ]
    ratios = [r["in-process"]["pairs_per_s"] / r["subprocess"]["pairs_per_s"] for r in rounds]
    result["throughput"] = {
        "workload": "examples/pairs.jsonl (24 pairs), K=4, labeling time without engine start",
        "rounds": rounds,
        "in_process_over_subprocess": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.plot)
    for core in CORES:
        summary = result["cold_start"][core]
        print(f"{core:>10}: first label {summary['first_label_s']:.1f} s, exit "
              f"{summary['exit_s']:.1f} s, forced kills {summary['forced_kills']}")  # fmt: skip
    median = result["throughput"]["median_ratio"]
    print(f"throughput in-process / subprocess: {ratios} (median {median})")
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
