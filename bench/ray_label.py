"""`cai-judge label --ray` (one actor) against the plain CLI on the default model.

The same pairs (distinct prompts, `bench.common.make_pairs`) through both, each as a real
subprocess: its peak RSS over the whole process tree (for --ray: the driver, Ray's local
processes and the actor with its engine), the time from launch to the first label in the
output file, and the steady throughput, measured the same way for both from outside: label
lines counted in the output file as it grows, pairs after the first batch divided by the time
from the first batch to the last. Engine start is thus excluded from both, and everything Ray
adds between batches (scheduling, serialization, the object store, the driver's writing) is
included. Writes bench/results/ray_label.json.

    .venv/bin/python -m bench.ray_label --pairs 64 --principles 4 --batch-size 8 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, PeakRss, make_pairs


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def run(pairs_path: Path, output: Path, args: argparse.Namespace, ray: bool) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "cai_judge.cli.main", "label", str(pairs_path), "-o", str(output),
        "--constitution", args.constitution, "--principles", args.principles,
        "--batch-size", str(args.batch_size),
    ]  # fmt: skip
    if ray:
        command += ["--ray", "--ray-actors", "1"]
    # Each side's output file, polled: (seconds since launch, labels written).
    seen: list[tuple[float, int]] = []
    log = output.with_suffix(".log")
    started = time.perf_counter()
    with log.open("w") as stderr:
        child = subprocess.Popen(command, stdout=stderr, stderr=stderr, env=os.environ.copy())
        with PeakRss(child.pid) as memory:
            while child.poll() is None:
                count = _count_lines(output)
                if not seen or count != seen[-1][1]:
                    seen.append((time.perf_counter() - started, count))
                time.sleep(0.05)
    wall = time.perf_counter() - started
    final = _count_lines(output)
    if child.returncode != 0 or final != args.pairs:
        sys.exit(f"label{' --ray' if ray else ''} failed ({child.returncode}):\n"
                 f"{log.read_text()[-3000:]}")  # fmt: skip
    if not seen or seen[-1][1] != final:
        seen.append((wall, final))
    growth = [(t, n) for t, n in seen if n > 0]
    first_t, first_n = growth[0]
    last_t, last_n = growth[-1]
    steady = (last_n - first_n) / (last_t - first_t) if last_t > first_t else None
    return {
        "peak_rss_gib": round(memory.peak / 2**30, 2),
        "first_label_s": round(first_t, 1),
        "wall_s": round(wall, 1),
        "steady_pairs_per_s": round(steady, 3) if steady else None,
        "summary": log.read_text().strip().splitlines()[-1][:400],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--principles", default="4")
    parser.add_argument("--constitution", default="harmless")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="Rounds of both sides, in ABBA order (plain, ray, ray, plain, ...), so a load "
        "that drifts during the run weighs on both alike (the machine is shared).",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_label.json")
    args = parser.parse_args()

    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "ray": []}
    worst = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        pairs_path = Path(scratch) / "pairs.jsonl"
        pairs_path.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(args.pairs)))
        for round_ in range(args.rounds):
            order = ["plain", "ray"] if round_ % 2 == 0 else ["ray", "plain"]
            for side in order:
                output = Path(scratch) / f"{side}-{round_}.jsonl"
                output.unlink(missing_ok=True)
                load = os.getloadavg()[0]
                measured = run(pairs_path, output, args, ray=side == "ray")
                measured["load_average_1m_before"] = round(load, 2)
                runs[side].append(measured)
            plain_lines = (Path(scratch) / f"plain-{round_}.jsonl").read_text().splitlines()
            ray_lines = (Path(scratch) / f"ray-{round_}.jsonl").read_text().splitlines()
            worst = max(
                worst,
                *(
                    abs(json.loads(a)["margin"] - json.loads(b)["margin"])
                    for a, b in zip(plain_lines, ray_lines, strict=True)
                ),
            )

    def median_rate(side: str) -> float | None:
        rates = [r["steady_pairs_per_s"] for r in runs[side] if r["steady_pairs_per_s"]]
        return statistics.median(rates) if rates else None

    plain_rate, ray_rate = median_rate("plain"), median_rate("ray")
    result = {
        "pairs": args.pairs,
        "principles": args.principles,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "plain": runs["plain"],
        "ray_one_actor": runs["ray"],
        "throughput_ratio_ray_over_plain": (
            round(ray_rate / plain_rate, 3) if plain_rate and ray_rate else None
        ),
        "max_margin_difference": worst,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
