"""Throughput and peak memory of `cai-judge label` on the default model.

Runs the real CLI as a subprocess over N distinct pairs (the bundled examples, each
variant with its own prompt so nothing is shared across pairs but what the layout
shares), polls the RSS of the whole process tree (CLI + vLLM engine core + worker),
and writes bench/results/label_cli.json.

    .venv/bin/python bench/label_cli.py --pairs 48 --principles 4
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, PeakRss, make_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--principles", default="4")
    parser.add_argument("--constitution", default="harmless")
    parser.add_argument("--out", type=Path, default=RESULTS / "label_cli.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        pairs_path = Path(scratch) / "pairs.jsonl"
        pairs_path.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(args.pairs)))
        command = [
            sys.executable, "-m", "cai_judge.cli.main", "label", str(pairs_path),
            "-o", str(Path(scratch) / "labels.jsonl"),
            "--constitution", args.constitution, "--principles", args.principles,
        ]  # fmt: skip
        started = time.perf_counter()
        child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        with PeakRss(child.pid) as memory:
            _, stderr = child.communicate()
        peak = memory.peak
        wall = time.perf_counter() - started

    match = re.search(r"labeled (\d+) pair\(s\) in ([\d.]+) s \(([\d.]+) pairs/s", stderr)
    if child.returncode != 0 or not match:
        sys.exit(f"label failed ({child.returncode}):\n{stderr[-3000:]}")
    cache = re.search(r"(\d+)% from the prefix cache", stderr)
    result = {
        "pairs": int(match.group(1)),
        "principles": args.principles,
        "constitution": args.constitution,
        "labeling_seconds": float(match.group(2)),
        "pairs_per_s": float(match.group(3)),
        "wall_seconds_with_engine_start": round(wall, 1),
        "prefix_cache_share": int(cache.group(1)) / 100 if cache else None,
        "peak_rss_gib": round(peak / 2**30, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
