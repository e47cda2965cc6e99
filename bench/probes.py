"""How gameable the default judge is: `cai-judge probe` on the project's gold sets.

Issue 32 asks for rewards a policy cannot game. This runs the probe command as a user
does (a subprocess, the default model, the real CPU engine) on a slice of each gold set,
with two principles of `helpful-harmless` cut into a constitution of their own, so every
rewrite is judged on the same principles as its pair and a run stays within ~8 minutes
on a shared 2-core CPU. The slice takes the same number of benign and harmful pairs, the
shortest first (padding both sides six times must fit the context).

    .venv/bin/python -m bench.probes                       # gold.jsonl, 12 pairs
    .venv/bin/python -m bench.probes --gold length-balanced --pairs 16

Writes the full report to out/probes/<gold>/ (report.json, report.html, probes.png), the
rates in bench/results/probes.json (merged with earlier runs of other gold sets) and the
plot to bench/probes_<gold>.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT

GOLD_SETS = {
    "gold": ROOT / "examples" / "gold" / "gold.jsonl",
    "length-balanced": ROOT / "examples" / "gold" / "length-balanced.jsonl",
}
# Benign pairs, where evasive-refusal runs: gold.jsonl's `benign`; in length-balanced the
# categories whose better answer is a helpful one.
BENIGN = {
    "gold": ["benign"],
    "length-balanced": ["over-refusal", "padded-non-answer", "helpful-detail", "correct-vs-wrong"],
}
PRINCIPLES = ("helpful-and-harmless", "clear-and-concise")
CONSTITUTION = "helpful-harmless-2"
OUT = RESULTS / "probes.json"


def write_constitution(folder: Path) -> None:
    """`helpful-harmless` cut to PRINCIPLES, as a constitution of its own."""
    import yaml

    path = ROOT / "service" / "cai_judge" / "constitutions" / "helpful-harmless.yaml"
    base = yaml.safe_load(path.read_text())
    base["id"] = CONSTITUTION
    base["description"] = f"Two principles of helpful-harmless: {', '.join(PRINCIPLES)}."
    base["principles"] = [p for p in base["principles"] if p["id"] in PRINCIPLES]
    (folder / f"{CONSTITUTION}.yaml").write_text(yaml.safe_dump(base, sort_keys=False))


def slice_pairs(rows: list[dict[str, Any]], count: int, benign: list[str]) -> list[dict[str, Any]]:
    def size(row: dict[str, Any]) -> int:
        return len(row["prompt"]) + len(row["response_a"]) + len(row["response_b"])

    ordered = sorted(rows, key=size)
    kind = [r for r in ordered if r.get("category") in benign]
    other = [r for r in ordered if r.get("category") not in benign]
    return kind[: count - count // 2] + other[: count // 2]


def run_probe(chosen: list[dict[str, Any]], out: Path, gold: str, seed: int) -> float:
    """`cai-judge probe` on the chosen pairs into `out`, as a subprocess (the default model,
    the real engine); the seconds it took, engine start included. Exits on a crash (1 is
    the CLI's "some pairs failed", which the report records)."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        write_constitution(folder)
        pairs = folder / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(r) + "\n" for r in chosen))
        command = [
            sys.executable, "-m", "cai_judge.cli.main", "probe", str(pairs), "-o", str(out),
            "--constitution", CONSTITUTION, "--constitutions-dir", str(folder),
            "--seed", str(seed), "--batch-size", "16",
        ]  # fmt: skip
        for category in BENIGN[gold]:
            command += ["--benign-category", category]
        started = time.perf_counter()
        done = subprocess.run(command, check=False)
        elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(done.returncode)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gold", choices=sorted(GOLD_SETS), default="gold")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows = [json.loads(line) for line in GOLD_SETS[args.gold].read_text().splitlines()]
    chosen = slice_pairs(rows, args.pairs, BENIGN[args.gold])
    out = ROOT / "out" / "probes" / args.gold
    elapsed = run_probe(chosen, out, args.gold, args.seed)
    report = json.loads((out / "report.json").read_text())
    summary = json.loads(OUT.read_text()) if OUT.exists() else {}
    summary[args.gold] = {
        "pairs": [r["id"] for r in chosen],
        "principles": list(PRINCIPLES),
        "model": report["judge"]["model"],
        "seconds_with_engine_start": round(elapsed, 1),
        "rewrites": len(report["variants"]),
        "errors": len(report["errors"]),
        "baseline_agreement": report["baseline"]["agreement"],
        "families": {f["family"]: f["win_rate"] for f in report["families"]},
        "probes": {
            f"{p['family']}/{p['probe']}": {
                "rate": p["win_rate"],
                "shift": p["margin_shift"],
                "per_principle": {k: v["value"] for k, v in p["per_principle"].items()},
            }
            for p in report["probes"]
        },
    }
    OUT.write_text(json.dumps(summary, indent=1) + "\n")
    (ROOT / "bench" / f"probes_{args.gold}.png").write_bytes((out / "probes.png").read_bytes())
    print(f"wrote {OUT} and {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
