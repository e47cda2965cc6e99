"""Adaptive principle ensembles (issue 31) against the full ensemble, on the default model.

One engine run (`score`, under the engine lock, about 8 minutes on the shared 2-core CPU)
labels, with `harmless` (K = 16 principles, both orders):

- three sets, sliced to fit the run: examples/gold/gold.jsonl (first 16 pairs),
  examples/gold/length-balanced.jsonl (first 16) and examples/pairs.jsonl (first 16, real
  HHH-style pairs), each with `ensemble: full` then `ensemble: adaptive` (δ = the default),
  timed, the prefix cache reset before each run so neither finds the other's prompts;
- the pairs set again at k = 8 (principles: 8), full then adaptive, timed;
- 3 reward groups of 4 completions (bench/rewards.py's make_groups), every round-robin
  match with `ensemble: full`.

Every full run keeps each principle's numbers (per_principle), so `analyze` (pure, no
engine) replays the adaptive rule (labeling/ensemble.py, a pure function) over them for
every δ, for k = 8 on every set (the 8 principles a k = 8 label selects are among the 16
scored), and for the rewards (m = 2 and round robin). The replay is exact: the rule reads
only the principles' numbers in the seeded draw order; the measured adaptive runs check it.

    .venv/bin/python -m bench.adaptive score     # the engine; writes results/adaptive_runs.json
    .venv/bin/python -m bench.adaptive analyze   # pure; results/adaptive.json, adaptive.png
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, ROOT
from bench.rewards import make_groups, spearman
from cai_judge.evaluation.metrics import expected_calibration_error
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.ensemble import DEFAULT_DELTA, principle_value, round_sizes, stopping_round
from cai_judge.labeling.label_math import (
    Aggregator,
    aggregate_margin,
    breakdown,
    draw_order,
    select_principles,
    selection_seed,
    sigmoid,
)
from cai_judge.labeling.options import LabelOptions
from cai_judge.labeling.rewards import balanced_schedule, mean_rewards, round_robin
from cai_judge.labeling.schema import Label, Pair

SETS = {
    "gold": ROOT / "examples" / "gold" / "gold.jsonl",
    "length-balanced": ROOT / "examples" / "gold" / "length-balanced.jsonl",
    "pairs": ROOT / "examples" / "pairs.jsonl",
}
PER_SET = 16
GROUPS, GROUP_SIZE = 3, 4
RUNS = RESULTS / "adaptive_runs.json"
OUT = RESULTS / "adaptive.json"
FIGURE = ROOT / "bench" / "adaptive.png"
DELTAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def read_set(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:PER_SET]


def as_pair(row: dict[str, Any]) -> Pair:
    return Pair(**{k: row[k] for k in ("id", "prompt", "response_a", "response_b")})


def reward_pairs() -> list[dict[str, Any]]:
    rows = []
    for group in make_groups(GROUPS, GROUP_SIZE, "adaptive"):
        texts = group["completions"]
        for a, b in round_robin(GROUP_SIZE):
            rows.append({
                "id": f"{group['id']}:{a}-{b}", "group": group["id"], "a": a, "b": b,
                "prompt": group["prompt"], "response_a": texts[a], "response_b": texts[b],
            })  # fmt: skip
    return rows


# -- score (the engine) -------------------------------------------------------------------


def _label_record(label: Label) -> dict[str, Any]:
    return label.model_dump(mode="json", exclude_none=True)


async def _timed(judge: Any, engine: Any, pairs: list[Pair], spec: Any, options: LabelOptions):
    if hasattr(engine, "reset_prefix_cache"):
        await engine.reset_prefix_cache()
    started = time.perf_counter()
    batch = await judge.run(await judge.plan(pairs, spec, options))
    seconds = time.perf_counter() - started
    errors = [e.model_dump(mode="json") for e in batch.errors]
    return {
        "seconds": seconds,
        "pairs_per_s": len(batch.labels) / seconds,
        "usage": batch.usage.model_dump(),
        "rounds": [vars(r) for r in batch.rounds],
        "errors": errors,
        "labels": [_label_record(label) for label in batch.labels],
    }


async def score() -> None:
    from cai_judge.engine.default_model import prepare_default_model
    from cai_judge.engine.vllm_async import VllmEngine, VllmEngineConfig
    from cai_judge.labeling.judge import Judge
    from cai_judge.settings import Settings

    registry = ConstitutionRegistry.with_builtins()
    spec = registry.resolve("harmless")
    model_dir = prepare_default_model(Settings().cache_dir)
    engine = await VllmEngine.start(
        VllmEngineConfig(model=str(model_dir), max_model_len=2048, cpu_kv_cache_gib=1)
    )
    await engine.warm_up()
    judge = Judge(engine, registry)
    saved: dict[str, Any] = {
        "model": engine.model_name,
        "constitution": spec.version,
        "principles": list(spec.principle_ids),
        "per_set": PER_SET,
    }
    full = LabelOptions(per_principle=True)
    adaptive = LabelOptions(per_principle=True, ensemble="adaptive")
    try:
        for name, path in SETS.items():
            pairs = [as_pair(r) for r in read_set(path)]
            runs = {
                "full": await _timed(judge, engine, pairs, spec, full),
                "adaptive": await _timed(judge, engine, pairs, spec, adaptive),
            }
            if name == "pairs":
                k8 = {"principles": 8}
                runs["full_k8"] = await _timed(
                    judge, engine, pairs, spec, full.model_copy(update=k8)
                )
                runs["adaptive_k8"] = await _timed(
                    judge, engine, pairs, spec, adaptive.model_copy(update=k8)
                )
            saved[name] = runs
            print(
                name,
                {k: (round(v["seconds"], 1), v["usage"]["score_units"]) for k, v in runs.items()},
                file=sys.stderr,
            )
        rewards = [as_pair(r) for r in reward_pairs()]
        saved["rewards"] = await _timed(judge, engine, rewards, spec, full)
        print("rewards", round(saved["rewards"]["seconds"], 1), file=sys.stderr)
    finally:
        judge.close()
        await engine.shutdown()
    RUNS.write_text(json.dumps(saved, separators=(",", ":")) + "\n")  # large: compact


# -- analyze (pure) -----------------------------------------------------------------------


def _replay(
    label: dict[str, Any],
    pair: Pair,
    spec_ids: list[str],
    version: str,
    k: int | None,
    delta: float | None,
) -> tuple[float, int]:
    """(margin, principles scored) of the label a k-principle `full` (delta None) or
    adaptive ensemble makes from the full run's per-principle numbers."""
    numbers = {p["principle"]: (p["s_ab"], p["s_ba"]) for p in label["per_principle"]}
    seed = selection_seed(pair.prompt_key(), pair.response_a, pair.response_b, version, 0)
    selected = select_principles(spec_ids, k, seed)
    scored = selected
    if delta is not None:
        order = draw_order(spec_ids, k, seed)
        values = [principle_value(*numbers[p], Aggregator.MEAN_LOGODDS) for p in order]
        sizes = round_sizes(len(order))
        stopped, _ = stopping_round(values, delta, sizes)
        chosen = set(order[: sum(sizes[:stopped])])
        scored = [p for p in selected if p in chosen]
    margin = aggregate_margin(
        [breakdown(p, *numbers[p], 1.0) for p in scored], Aggregator.MEAN_LOGODDS
    )
    return margin, len(scored)


def _side(margin: float) -> int:
    return int(margin > 0) - int(margin < 0)


def _compare(
    full: list[tuple[float, int]], adaptive: list[tuple[float, int]], gold: list[str] | None, k: int
) -> dict[str, Any]:
    fm = np.array([m for m, _ in full])
    am = np.array([m for m, _ in adaptive])
    scored = np.array([n for _, n in adaptive])
    out: dict[str, Any] = {
        "pairs": len(full),
        "units_full": 2 * k * len(full),
        "units_adaptive": int(2 * scored.sum()),
        "fewer_units": round(1 - scored.sum() / (k * len(full)), 3),
        "agreement_with_full": round(
            float(np.mean([_side(a) == _side(f) for a, f in zip(am, fm, strict=True)])), 3
        ),
        "margin_correlation": round(float(np.corrcoef(fm, am)[0, 1]), 3),
    }
    if gold is not None:
        target = np.array([1.0 if g == "a" else 0.0 for g in gold])
        for name, margins in (("full", fm), ("adaptive", am)):
            out[f"gold_agreement_{name}"] = round(
                float(
                    np.mean([(m > 0) == (t == 1.0) for m, t in zip(margins, target, strict=True)])
                ),
                3,
            )
            out[f"ece_{name}"] = round(
                expected_calibration_error([sigmoid(m) for m in margins], target), 3
            )
    return out


def analyze() -> None:
    runs = json.loads(RUNS.read_text())
    spec_ids, version = runs["principles"], runs["constitution"]
    result: dict[str, Any] = {"model": runs["model"], "per_set": runs["per_set"]}
    curves: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for name, path in SETS.items():
        rows = {r["id"]: r for r in read_set(path)}
        sets = runs[name]
        labels = sets["full"]["labels"]
        pairs = [as_pair(rows[label["id"]]) for label in labels]
        gold = (
            [rows[label["id"]]["preferred"] for label in labels]
            if "preferred" in next(iter(rows.values()))
            else None
        )
        measured = {
            kind: {
                "seconds": round(run["seconds"], 1),
                "pairs_per_s": round(run["pairs_per_s"], 3),
                "score_units": run["usage"]["score_units"],
                "prompt_tokens": run["usage"]["prompt_tokens"],
                "cached_prompt_tokens": run["usage"]["cached_prompt_tokens"],
            }
            for kind, run in sets.items()
        }
        entry: dict[str, Any] = {"measured": measured}
        entry["speedup_k16"] = round(
            measured["adaptive"]["pairs_per_s"] / measured["full"]["pairs_per_s"], 2
        )
        if "adaptive_k8" in measured:
            entry["speedup_k8"] = round(
                measured["adaptive_k8"]["pairs_per_s"] / measured["full_k8"]["pairs_per_s"], 2
            )
        rounds = sets["adaptive"]["rounds"]
        later = rounds[1:]
        entry["rounds"] = [
            {
                "pairs": r["pairs"], "score_units": r["score_units"],
                "cached_share": round(r["cached_prompt_tokens"] / max(1, r["prompt_tokens"]), 3),
            }
            for r in rounds
        ]  # fmt: skip
        entry["cached_share_rounds_2plus"] = round(
            sum(r["cached_prompt_tokens"] for r in later)
            / max(1, sum(r["prompt_tokens"] for r in later)),
            3,
        )
        # The replay checked against the measured adaptive run: the same principles scored.
        real = {label["id"]: label for label in sets["adaptive"]["labels"]}
        replayed = [
            _replay(label, pair, spec_ids, version, None, DEFAULT_DELTA)
            for label, pair in zip(labels, pairs, strict=True)
        ]
        entry["replay_matches_measured"] = round(
            float(
                np.mean([
                    real[label["id"]]["ensemble"]["scored"] == n
                    for label, (_, n) in zip(labels, replayed, strict=True)
                ])
            ),
            3,
        )  # fmt: skip
        for k in (16, 8):
            kk = None if k == 16 else k
            full = [
                _replay(lab, p, spec_ids, version, kk, None)
                for lab, p in zip(labels, pairs, strict=True)
            ]
            at_default = [
                _replay(lab, p, spec_ids, version, kk, DEFAULT_DELTA)
                for lab, p in zip(labels, pairs, strict=True)
            ]
            entry[f"k{k}"] = _compare(full, at_default, gold, k)
            curve = []
            for delta in DELTAS:
                adaptive = [
                    _replay(lab, p, spec_ids, version, kk, delta)
                    for lab, p in zip(labels, pairs, strict=True)
                ]
                c = _compare(full, adaptive, gold, k)
                curve.append((delta, c["fewer_units"], c["agreement_with_full"]))
            entry[f"k{k}_delta_curve"] = [
                {"delta": d, "fewer_units": f, "agreement_with_full": a} for d, f, a in curve
            ]
            curves.setdefault(f"K = {k}", {})[name] = curve
        result[name] = entry
    result["rewards"] = _rewards(runs, spec_ids, version)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    _plot(curves)
    print(json.dumps(result, indent=1))


def _rewards(runs: dict[str, Any], spec_ids: list[str], version: str) -> dict[str, Any]:
    """Group rewards (mean win probability) from the full and the replayed adaptive labels:
    Spearman of each group's rewards, averaged over groups, round robin and m = 2."""
    rows = {r["id"]: r for r in reward_pairs()}
    labels = {label["id"]: label for label in runs["rewards"]["labels"]}
    out: dict[str, Any] = {"groups": GROUPS, "group_size": GROUP_SIZE}
    for schedule_name in ("round_robin", "m2"):
        per_delta = []
        for delta in DELTAS:
            rhos, units_full, units_adaptive = [], 0, 0
            for g in range(GROUPS):
                group = f"g{g}"
                matches = (
                    round_robin(GROUP_SIZE)
                    if schedule_name == "round_robin"
                    else balanced_schedule(GROUP_SIZE, 2, seed=g)
                )
                full_p, adaptive_p = [], []
                for a, b in matches:
                    row = rows[f"{group}:{a}-{b}"]
                    label, pair = labels[row["id"]], as_pair(row)
                    fm, nf = _replay(label, pair, spec_ids, version, None, None)
                    am, na = _replay(label, pair, spec_ids, version, None, delta)
                    full_p.append(sigmoid(fm))
                    adaptive_p.append(sigmoid(am))
                    units_full += 2 * nf
                    units_adaptive += 2 * na
                rhos.append(
                    spearman(
                        mean_rewards(GROUP_SIZE, matches, full_p),
                        mean_rewards(GROUP_SIZE, matches, adaptive_p),
                    )
                )
            per_delta.append({
                "delta": delta,
                "spearman_mean": round(float(np.nanmean(rhos)), 3),
                "spearman_min": round(float(np.nanmin(rhos)), 3),
                "fewer_units": round(1 - units_adaptive / units_full, 3),
            })  # fmt: skip
        out[schedule_name] = per_delta
    return out


def _plot(curves: dict[str, dict[str, list[tuple[float, float, float]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, (title, by_set) in zip(axes, curves.items(), strict=True):
        for name, curve in by_set.items():
            deltas = [d for d, _, _ in curve]
            line = axis.plot(
                deltas, [f for _, f, _ in curve], marker="o", label=f"{name}: fewer units"
            )
            axis.plot(
                deltas, [a for _, _, a in curve], marker="s", linestyle="--",
                color=line[0].get_color(), label=f"{name}: agreement with full",
            )  # fmt: skip
        axis.axhline(0.4, color="grey", linewidth=0.6)
        axis.axhline(0.97, color="grey", linewidth=0.6)
        axis.set_xscale("log")
        axis.set_xlabel("δ")
        axis.set_title(f"adaptive vs full ensemble, {title}")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("share")
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=110)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "analyze"
    if command == "score":
        asyncio.run(score())
    elif command == "analyze":
        analyze()
    else:
        raise SystemExit("usage: python -m bench.adaptive score|analyze")


if __name__ == "__main__":
    main()
