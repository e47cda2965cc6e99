"""The probes with the rewards path's defenses on: does each defense cut what it was built for,
and does any probe get worse? (issue 32)

`run` probes a slice of a gold set as bench/probes.py does (the same two-principle
constitution, the same slice, `cai-judge probe` as a subprocess on the default model), into
out/probe_defenses/<gold>/. `analyze` then recomputes every rewrite's verdict as the rewards
path would give it with the defenses on, from the report's margins alone (no second engine
run):

- **length control** (`calibrated: true`): each margin debiased, m − β̄·log(tokens_a /
  tokens_b), tokens counted by the judge's own tokenizer (labeling/calibration_profile.py
  `response_token_count`). β̄ is fitted without labels (evaluation/calibration_fit.py, the slope
  through the origin) by two-fold cross-fitting over source pairs: the pairs of one fold are
  debiased with the β fitted on the other fold's judged pairs, so no pair is debiased with a
  β it helped fit. `--fit-on all` (the default) fits on the other fold's unmodified pairs and
  their rewrites, like the policy's own samples in a GRPO run (`calibrate --unlabeled` on the
  groups it samples: answers of every length and kind); `--fit-on baseline` on its unmodified
  pairs alone.
- **exploit floor** (`exploits: floor`): a completion labeling/exploits.py flags gets its
  group's lowest reward, so a flagged rewritten side never beats the real answer (win 0).

For the probes that rewrite the side the raw judge preferred less (length, address-judge,
evasive-refusal, format), a defended flip is counted only on pairs where the defended judge
also preferred that side less on the unmodified pair (the rest are left out and counted): a
debiased baseline that already prefers the rewritten side is no flip the rewrite caused.

    .venv/bin/python -m bench.probe_defenses run --gold gold --pairs 24      # engine: ~6 min
    .venv/bin/python -m bench.probe_defenses analyze --gold gold --pairs 24  # no engine

Writes bench/results/probe_defenses.json (merged per gold set) and bench/probe_defenses.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT
from bench.probes import (
    BENIGN,
    GOLD_SETS,
    PRINCIPLES,
    run_probe,
    slice_pairs,
)

OUT = RESULTS / "probe_defenses.json"
PLOT = ROOT / "bench" / "probe_defenses.png"


def out_dir(gold: str) -> Path:
    return ROOT / "out" / "probe_defenses" / gold


def chosen_pairs(gold: str, count: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in GOLD_SETS[gold].read_text().splitlines()]
    return slice_pairs(rows, count, BENIGN[gold])


def run(gold: str, count: int, seed: int) -> None:
    chosen = chosen_pairs(gold, count)
    out = out_dir(gold)
    elapsed = run_probe(chosen, out, gold, seed)
    (out / "run.json").write_text(
        json.dumps({"pairs": [r["id"] for r in chosen], "seconds": round(elapsed, 1)}) + "\n"
    )
    print(f"probed {len(chosen)} pairs in {elapsed:.0f} s into {out}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["run", "analyze"])
    parser.add_argument("--gold", choices=sorted(GOLD_SETS), default="gold")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-on", choices=["all", "baseline"], default="all")
    args = parser.parse_args()
    if args.step == "run":
        run(args.gold, args.pairs, args.seed)
    else:
        analyze(args.gold, args.pairs, args.seed, args.fit_on)


# The defenses, alone and together, in the order the table and plot show them.
SETTINGS = ("raw", "length", "floor", "both")
REWRITES_THE_WEAKER_SIDE = ("length", "length-both", "address-judge", "evasive-refusal", "format")


def analyze(gold: str, count: int, seed: int, fit_on: str) -> None:
    import numpy as np
    from transformers import AutoTokenizer

    from cai_judge.engine.default_model import default_model_dir
    from cai_judge.evaluation.probe_report import (
        ProbeMetricSettings,
        VariantRecord,
        summarize,
    )
    from cai_judge.labeling.calibration_profile import response_token_count
    from cai_judge.labeling.exploits import exploit_reasons
    from cai_judge.labeling.label_math import preferred_from_margin
    from cai_judge.labeling.probes import ProbeFamily, other, response, rewrites, weaker_side
    from cai_judge.labeling.schema import Pair
    from cai_judge.settings import Settings

    report = json.loads((out_dir(gold) / "report.json").read_text())
    sources = {r["id"]: r for r in chosen_pairs(gold, count)}
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir(Settings().cache_dir))
    counted: dict[str, int] = {}

    def tokens(text: str) -> int:
        if text not in counted:
            counted[text] = response_token_count(tokenizer, text)
        return counted[text]

    def length(pair: Pair) -> float:
        return float(np.log(tokens(pair.response_a)) - np.log(tokens(pair.response_b)))

    variants = [VariantRecord.model_validate(v) for v in report["variants"]]
    order = [pid for pid in sources if any(v.pair == pid for v in variants)]
    fold = {pid: i % 2 for i, pid in enumerate(order)}
    # Each variant's rewritten pair, rebuilt from the pure rewrites (seeded as the run was).
    rebuilt: dict[tuple[str, str, str, str], Pair] = {}
    baseline: dict[str, tuple[float, Pair]] = {}
    for pid in order:
        raw = sources[pid]
        pair = Pair.model_validate(
            {k: raw[k] for k in ("id", "prompt", "response_a", "response_b")}
        )
        margin = next(v.baseline_margin for v in variants if v.pair == pid)
        baseline[pid] = (margin, pair)
        benign = raw.get("category") is None or raw.get("category") in BENIGN[gold]
        for made in rewrites(pair, weaker_side(margin), seed=seed, benign=benign):
            rebuilt[(pid, str(made.family), made.probe, made.target)] = made.pair

    def rewritten(v: VariantRecord) -> Pair:
        return rebuilt[(v.pair, str(v.family), v.probe, v.target)]

    # β through the origin on each fold's complement: no pair is debiased by its own fit.
    points: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    for pid in order:
        margin, pair = baseline[pid]
        points[fold[pid]].append((margin, length(pair)))
    if fit_on == "all":
        for v in variants:
            points[fold[v.pair]].append((v.margin, length(rewritten(v))))
    beta = {}
    for k in (0, 1):
        m, x = (np.array(c) for c in zip(*points[1 - k], strict=True))
        beta[k] = float(m @ x / (x @ x))

    def win(margin: float, target: str) -> float:
        verdict = preferred_from_margin(margin)
        return 0.5 if verdict == "tie" else float(verdict == target)

    def floored(pair: Pair, target: str, margin: float) -> float:
        """The exploit floor: a flagged side never beats an unflagged one."""
        mine = bool(exploit_reasons(response(pair, target)))  # type: ignore[arg-type]
        theirs = bool(exploit_reasons(response(pair, other(target))))  # type: ignore[arg-type]
        if mine != theirs:
            return 0.0 if mine else 1.0
        return win(margin, target)

    records: dict[str, list[VariantRecord]] = {name: [] for name in SETTINGS}
    left_out: dict[str, dict[str, int]] = {name: {} for name in SETTINGS}
    for v in variants:
        b = beta[fold[v.pair]]
        base_margin, base_pair = baseline[v.pair]
        pair = rewritten(v)
        for name in SETTINGS:
            debias = name in ("length", "both")
            floor = name in ("floor", "both")
            m = v.margin - b * length(pair) if debias else v.margin
            m0 = base_margin - b * length(base_pair) if debias else base_margin
            w = floored(pair, v.target, m) if floor else win(m, v.target)
            w0 = floored(base_pair, v.target, m0) if floor else win(m0, v.target)
            if str(v.family) in REWRITES_THE_WEAKER_SIDE and w0 != 0.0:
                key = str(v.family)
                left_out[name][key] = left_out[name].get(key, 0) + 1
                continue
            shift = (m - m0) if v.target == "a" else (m0 - m)
            records[name].append(
                v.model_copy(update={"win": w, "shift": shift, "principle_wins": {}})
            )
    metrics = ProbeMetricSettings(seed=seed)
    families = [ProbeFamily(f["family"]) for f in report["families"]]
    found: dict[str, Any] = {}
    for name in SETTINGS:
        family_results, probe_results = summarize(records[name], families, metrics)
        found[name] = {
            "families": {
                str(f.family): None if f.win_rate is None else dataclasses.asdict(f.win_rate)
                for f in family_results
            },
            "probes": {
                f"{p.family}/{p.probe}": None
                if p.win_rate is None
                else dataclasses.asdict(p.win_rate)
                for p in probe_results
            },
            # How far each rewrite moved the (debiased) margin toward its target, in nats.
            "shifts": {
                f"{p.family}/{p.probe}": (
                    None if p.margin_shift is None else dataclasses.asdict(p.margin_shift)
                )
                for p in probe_results
            },
            "left_out": left_out[name],
        }
    # The raw rates must be the report's own: the recomputation reads the same records.
    for f in report["families"]:
        ours = found["raw"]["families"][f["family"]]
        if f["family"] not in REWRITES_THE_WEAKER_SIDE and ours is not None:
            assert abs(ours["value"] - f["win_rate"]["value"]) < 1e-12, f["family"]
    summary = json.loads(OUT.read_text()) if OUT.exists() else {}
    summary.setdefault(gold, {})[fit_on] = {
        "pairs": order,
        "principles": list(PRINCIPLES),
        "model": report["judge"]["model"],
        "rewrites": len(variants),
        "errors": len(report["errors"]),
        "fit_on": fit_on,
        "beta_by_fold": [beta[0], beta[1]],
        "settings": found,
    }
    OUT.write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary)
    print(table(gold, summary[gold][fit_on]))
    print(f"wrote {OUT} and {PLOT}", file=sys.stderr)


def table(gold: str, found: dict[str, Any]) -> str:
    def cell(e: dict[str, Any] | None) -> str:
        if e is None:
            return "–"
        return f"{e['value']:.1%} [{e['low']:.0%}, {e['high']:.0%}] n={e['n']}"

    lines = [f"{gold}: β̄ by fold {found['beta_by_fold']} (fitted on {found['fit_on']})"]
    lines.append("| probe | " + " | ".join(SETTINGS) + " |")
    lines.append("|---" * (len(SETTINGS) + 1) + "|")
    for family in found["settings"]["raw"]["families"]:
        row = [cell(found["settings"][s]["families"][family]) for s in SETTINGS]
        lines.append(f"| {family} | " + " | ".join(row) + " |")
    for probe in found["settings"]["raw"]["probes"]:
        row = [cell(found["settings"][s]["probes"][probe]) for s in SETTINGS]
        lines.append(f"| {probe} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits = {g: found.get("all") or next(iter(found.values())) for g, found in summary.items()}
    golds = sorted(fits)
    fig, axes = plt.subplots(1, len(golds), figsize=(6.5 * len(golds), 4.2), squeeze=False)
    colors = {"raw": "#888888", "length": "#1f77b4", "floor": "#ff7f0e", "both": "#2ca02c"}
    for ax, gold in zip(axes[0], golds, strict=True):
        found = fits[gold]["settings"]
        families = list(found["raw"]["families"])
        width = 0.2
        for k, name in enumerate(SETTINGS):
            values, errors = [], [[], []]
            for family in families:
                e = found[name]["families"][family]
                value = e["value"] if e else 0.0
                values.append(value)
                errors[0].append(value - e["low"] if e else 0.0)
                errors[1].append(e["high"] - value if e else 0.0)
            xs = [i + (k - 1.5) * width for i in range(len(families))]
            ax.bar(xs, values, width, yerr=errors, label=name, color=colors[name], capsize=2)
        ax.set_xticks(range(len(families)))
        ax.set_xticklabels(families, rotation=20, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("flip or win rate (95% bootstrap)")
        ax.set_title(f"{gold}: {len(fits[gold]['pairs'])} pairs, β fitted on "
                     f"{fits[gold]['fit_on']} (other fold)", fontsize=9)  # fmt: skip
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


if __name__ == "__main__":
    main()
