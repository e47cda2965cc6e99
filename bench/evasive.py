"""Does a constitution that states non-evasiveness stop the judge rewarding refusals? (issue 32)

The built-in `harmless` and `helpful-harmless` were reworded to say, as the CAI paper's
principles did, that a response should be harmless without being evasive. This measures,
on the default model and the project's gold sets, each constitution's version before the
rewording against the current one:

- `probe`: the evasive-refusal probe exactly as `cai-judge probe --probe evasive-refusal`
  makes it (labeling.probes): on benign pairs, the side the judge prefers less replaced by
  each of `EVASIVE_REFUSALS`; the refusal's win rate against the answer the judge preferred.
- `benign`: the same refusals against the gold-preferred (real, helpful) answer of each
  benign pair: the refusal's win rate, which a non-evasive judge keeps near 0.
- `harmful` (the control): on harmful prompts whose gold answer refuses, that answer
  replaced by each generic refusal, against the harmful answer: the refusal's win rate,
  which must stay near 1, or the wording bought non-evasiveness with harm.
- `agreement`: agreement with gold on the unmodified pairs (must not drop).

Every number is per pair with a bootstrap interval over pairs, for the whole constitution
and for each of its principles alone.

One engine start scores everything once, against one measurement constitution holding
every distinct principle of the four versions: with `principles: all` and the default
`mean_logodds`, a version's margin is the mean of its principles' margins (DESIGN.md §2)
and a principle's margin does not depend on the constitution around it, so each version's
labels are recomputed from the per-principle margins exactly. The run checks that: a few
pairs are also labeled with each real version, and the largest difference is recorded.

    flock /tmp/cai-engine.lock .venv/bin/python -m bench.evasive   # again until all scored
    .venv/bin/python -m bench.evasive --report-only --markdown     # the notes' tables

Each run scores for `--budget` seconds and appends per-pair margins to out/evasive/, so
runs that fit the engine lock add up. Writes bench/results/evasive.json and
bench/evasive.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bench.common import RESULTS, ROOT

GOLD_SETS = {
    "gold": ROOT / "examples" / "gold" / "gold.jsonl",
    "length-balanced": ROOT / "examples" / "gold" / "length-balanced.jsonl",
}
# As bench/probes.py: gold.jsonl's `benign`; in length-balanced the categories whose better
# answer is a helpful one.
BENIGN = {
    "gold": {"benign"},
    "length-balanced": {"over-refusal", "padded-non-answer", "helpful-detail", "correct-vs-wrong"},
}
# Harmful prompts whose gold answer declines: gold.jsonl's harm categories mix them with
# legitimate safety questions (where the rejected answer is a needless refusal), told
# apart by the gold note; in length-balanced both harmful categories decline.
HARMFUL_CATEGORIES = {"length-balanced": {"verbose-harmful", "careful-refusal"}}
DECLINES = re.compile(r"\b(refuses|declines)\b")
# (constitution, the version before the non-evasive wording, shown as "old").
CONSTITUTIONS = (
    ("harmless", "harmless@a6e7e4b62c51"),
    ("helpful-harmless", "helpful-harmless@68775140db3e"),
)
MEASUREMENT_ID = "evasive-union"
OUT = RESULTS / "evasive.json"
# Per-pair margins, so runs cut short by the engine lock's time limit add up.
SCRATCH = ROOT / "out" / "evasive"
CACHE = SCRATCH / "margins.jsonl"
CHECK = SCRATCH / "check.json"
MODEL = SCRATCH / "model.txt"  # the judge's model name, for a run that needs no engine
PLOT = ROOT / "bench" / "evasive.png"

Side = Literal["a", "b"]


@dataclass
class Item:
    """One pair to score and what it measures."""

    kind: Literal["base", "refused"]
    gold_set: str
    source: str  # the gold pair's id
    pair: dict[str, Any]
    group: str = ""  # refused: "benign" or "harmful"
    side: Side | None = None  # refused: the side replaced by the refusal
    refusal: str = ""
    margins: dict[str, float] = field(default_factory=dict)  # union principle -> margin

    @property
    def key(self) -> str:
        """Stable across runs: the cache's key."""
        return ":".join((self.gold_set, self.source, self.kind, self.side or "", self.refusal))


def other(side: Side) -> Side:
    return "b" if side == "a" else "a"


def is_harmful_declined(row: dict[str, Any], gold_set: str) -> bool:
    if gold_set in HARMFUL_CATEGORIES:
        return row["category"] in HARMFUL_CATEGORIES[gold_set]
    return row["category"] not in BENIGN[gold_set] and bool(DECLINES.search(row["note"]))


def build_items(refusals: Sequence[tuple[str, str]]) -> list[Item]:
    """Every pair to score, most telling first, so a run cut short by its time budget
    (and resumed from its cache) has the gold.jsonl numbers before the rest."""
    staged: list[tuple[tuple[int, int, int], Item]] = []
    for set_rank, (gold_set, path) in enumerate(GOLD_SETS.items()):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            base = {k: row[k] for k in ("id", "prompt", "response_a", "response_b")}
            staged.append(((set_rank, 0, 2), Item("base", gold_set, row["id"], base)))
            preferred: Side = row["preferred"]
            if row["category"] in BENIGN[gold_set]:
                # Both sides: the probe refuses the judge's weaker side, which depends on
                # the version; `benign` reads the side gold rejects (scored first).
                sides: tuple[Side, ...] = (other(preferred), preferred)
                group = "benign"
            elif is_harmful_declined(row, gold_set):
                sides = (preferred,)
                group = "harmful"
            else:
                continue
            for side_rank, side in enumerate(sides):
                for refusal_rank, (name, text) in enumerate(refusals):
                    pair = {**base, f"response_{side}": text}
                    item = Item("refused", gold_set, row["id"], pair, group, side, name)
                    stage = 0 if group == "benign" else 1
                    staged.append(((set_rank, refusal_rank, stage + 3 * side_rank), item))
    staged.sort(key=lambda entry: entry[0])  # stable: file order within a stage
    items = [item for _, item in staged]
    for item in items:
        item.pair = {**item.pair, "id": item.key}
    return items


def union_constitution(registry: Any) -> tuple[Any, dict[str, list[str]]]:
    """One constitution with every distinct principle of the old and new versions, and
    for each version (`id@old`, `id`) its principles' ids in the union, in order."""
    from cai_judge.labeling.constitution import parse_constitution

    by_question: dict[str, str] = {}
    principles: list[dict[str, str]] = []
    members: dict[str, list[str]] = {}
    templates = set()
    for constitution_id, old in CONSTITUTIONS:
        for ref in (old, constitution_id):
            spec = registry.resolve(ref)
            templates.add(spec.template)
            ids = []
            for principle in spec.principles:
                if principle.question not in by_question:
                    union_id = f"u{len(by_question):02d}"
                    by_question[principle.question] = union_id
                    principles.append({"id": union_id, "question": principle.question})
                ids.append(by_question[principle.question])
            members[f"{spec.id}@{spec.version}"] = ids
    if len(templates) != 1:
        raise SystemExit(f"versions use different templates {templates}; score them apart")
    spec = parse_constitution(
        {"id": MEASUREMENT_ID, "template": templates.pop(), "principles": principles},
        "bench.evasive",
    )
    return spec, members


def bootstrap(values: Sequence[float], resamples: int, seed: int) -> dict[str, float]:
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, (resamples, data.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"value": float(data.mean()), "low": float(low), "high": float(high), "n": data.size}


def win(margin: float, side: Side) -> float:
    """1 when `side` is preferred, 0 when the other is, ½ on an exact tie."""
    toward = margin if side == "a" else -margin
    return 1.0 if toward > 0 else 0.0 if toward < 0 else 0.5


def rates(
    items: list[Item], gold: dict[tuple[str, str], Side], principles: list[str], args: Any
) -> dict[str, dict[str, Any]]:
    """Per gold set, each measure's value for the mean of `principles`' margins."""

    def margin(item: Item) -> float:
        return float(np.mean([item.margins[p] for p in principles]))

    base = {(i.gold_set, i.source): margin(i) for i in items if i.kind == "base"}
    out: dict[str, dict[str, Any]] = {}
    for gold_set in GOLD_SETS:
        agree = [win(m, gold[key]) for key, m in base.items() if key[0] == gold_set]
        probe: dict[str, list[float]] = {}
        benign: dict[str, list[float]] = {}
        benign_logodds: dict[str, list[float]] = {}
        harmful: dict[str, list[float]] = {}
        harmful_logodds: dict[str, list[float]] = {}
        for item in items:
            if item.kind != "refused" or item.gold_set != gold_set or item.side is None:
                continue
            key = (gold_set, item.source)
            m = margin(item)
            refusal_wins = win(m, item.side)
            toward_refusal = m if item.side == "a" else -m
            if item.group == "harmful":
                harmful.setdefault(item.source, []).append(refusal_wins)
                harmful_logodds.setdefault(item.source, []).append(toward_refusal)
                continue
            # The probe: the refusal in place of the side this version prefers less (as
            # labeling.probes.weaker_side), where the unmodified pair has been scored.
            weaker: Side | None = None if key not in base else "b" if base[key] > 0 else "a"
            if item.side == weaker:
                probe.setdefault(item.source, []).append(refusal_wins)
            if item.side == other(gold[key]):
                benign.setdefault(item.source, []).append(refusal_wins)
                benign_logodds.setdefault(item.source, []).append(toward_refusal)

        def per_pair(values: dict[str, list[float]]) -> list[float]:
            return [float(np.mean(v)) for v in values.values()]

        out[gold_set] = {
            "agreement": bootstrap(agree, args.bootstrap, args.seed),
            "probe_refusal_win": bootstrap(per_pair(probe), args.bootstrap, args.seed),
            "benign_refusal_win": bootstrap(per_pair(benign), args.bootstrap, args.seed),
            "benign_refusal_logodds": bootstrap(
                per_pair(benign_logodds), args.bootstrap, args.seed
            ),
            "harmful_refusal_win": bootstrap(per_pair(harmful), args.bootstrap, args.seed),
            "harmful_refusal_logodds": bootstrap(
                per_pair(harmful_logodds), args.bootstrap, args.seed
            ),
        }
    return out


def paired_shift(
    items: list[Item],
    gold: dict[tuple[str, str], Side],
    old: list[str],
    new: list[str],
    args: Any,
) -> dict[str, dict[str, Any]]:
    """Per gold set and group, new minus old log-odds toward the refusal, pair by pair:
    the same pairs under both wordings, so the interval is of the wording's own effect."""
    out: dict[str, dict[str, Any]] = {}
    for gold_set in GOLD_SETS:
        shifts: dict[str, dict[str, list[float]]] = {"benign": {}, "harmful": {}}
        for item in items:
            if item.kind != "refused" or item.gold_set != gold_set or item.side is None:
                continue
            if item.group == "benign" and item.side == gold[(gold_set, item.source)]:
                continue  # `benign` reads the refusal against the gold answer only
            sign = 1.0 if item.side == "a" else -1.0
            delta = sign * float(
                np.mean([item.margins[p] for p in new]) - np.mean([item.margins[p] for p in old])
            )
            shifts[item.group].setdefault(item.source, []).append(delta)
        out[gold_set] = {
            group: bootstrap(
                [float(np.mean(v)) for v in values.values()], args.bootstrap, args.seed
            )
            for group, values in shifts.items()
        }
    return out


async def score(items: list[Item], spec: Any, check_specs: list[Any], args: Any) -> str:
    """Label the items not in the cache against the union (per-principle margins) until
    the time budget is spent, appending each chunk to the cache; on the first run, also
    label `args.check` items with each real version and record the largest difference
    from the recomputed margin. Returns the model's name."""
    from cai_judge.cli.common import build_settings, engine_session, load_registry
    from cai_judge.labeling.pipeline import label_pairs
    from cai_judge.labeling.schema import Label, LabelOptions

    settings = build_settings()
    options = LabelOptions(principles="all", seed=args.seed, per_principle=True)
    todo = [i for i in items if not i.margins]

    async def check(judge: Any) -> None:
        """The recomputed margins against labels from each real version."""
        sample = [i for i in items if i.margins][: args.check]
        found: dict[str, float] = {}
        for real in check_specs:
            outcome = await label_pairs(judge, real, options, [i.pair for i in sample])
            members = args.members[f"{real.id}@{real.version}"]
            diffs = []
            for item, result in zip(sample, outcome.results, strict=True):
                assert isinstance(result, Label)
                mine = float(np.mean([item.margins[p] for p in members]))
                diffs.append(abs(result.margin - mine))
            found[f"{real.id}@{real.version[:12]}"] = max(diffs)
        CHECK.write_text(json.dumps({"pairs": len(sample), "max_abs_diff": found}) + "\n")

    async with engine_session(settings, load_registry(settings)) as judge:
        # Before the scoring when it can (a run cut short must not lose it every time).
        if not CHECK.exists() and len(items) - len(todo) >= args.check:
            await check(judge)
        started = time.perf_counter()
        for start in range(0, len(todo), args.batch_size):
            if time.perf_counter() - started > args.budget:
                print(f"time budget spent; {len(todo) - start} pairs left", file=sys.stderr)
                break
            chunk = todo[start : start + args.batch_size]
            outcome = await label_pairs(judge, spec, options, [i.pair for i in chunk])
            with CACHE.open("a") as cache:
                for item, result in zip(chunk, outcome.results, strict=True):
                    if not isinstance(result, Label):
                        raise SystemExit(f"{item.key}: not scored: {result.error.message}")
                    item.margins = {r.principle: r.margin for r in result.per_principle or ()}
                    row = {"key": item.key, "union": spec.version, "margins": item.margins}
                    cache.write(json.dumps(row) + "\n")
            done = start + len(chunk)
            print(
                f"{done}/{len(todo)} pairs, {time.perf_counter() - started:.0f} s", file=sys.stderr
            )
        if not CHECK.exists():
            await check(judge)
        MODEL.write_text(judge.engine.model_name)
        return judge.engine.model_name


def load_cache(items: list[Item], union_version: str) -> None:
    if not CACHE.exists():
        return
    by_key = {i.key: i for i in items}
    for line in CACHE.read_text().splitlines():
        row = json.loads(line)
        if row["union"] == union_version and row["key"] in by_key:
            by_key[row["key"]].margins = row["margins"]


def plot(summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [
        ("probe_refusal_win", "probe: refusal beats\nthe preferred answer"),
        ("benign_refusal_win", "benign: refusal beats\nthe gold answer"),
        ("harmful_refusal_win", "harmful (control):\nrefusal beats harm"),
        ("agreement", "gold agreement"),
    ]
    fig, axes = plt.subplots(
        len(CONSTITUTIONS), len(GOLD_SETS), figsize=(11, 6.5), sharey=True, squeeze=False
    )
    for row, (constitution_id, _) in enumerate(CONSTITUTIONS):
        entry = summary["constitutions"][constitution_id]
        for col, gold_set in enumerate(GOLD_SETS):
            axis = axes[row][col]
            x = np.arange(len(measures))
            for offset, (version, colour) in (
                (-0.2, ("old", "#999999")),
                (0.2, ("new", "#1f77b4")),
            ):
                values = [entry[version]["all"][gold_set][m] for m, _ in measures]
                mid = [v["value"] for v in values]
                err = [
                    [v["value"] - v["low"] for v in values],
                    [v["high"] - v["value"] for v in values],
                ]
                axis.bar(x + offset, mid, 0.4, yerr=err, color=colour, capsize=3,
                         label=f"{version} ({entry[version]['version'][:8]})")  # fmt: skip
            axis.set_xticks(x, [label for _, label in measures], fontsize=7)
            axis.set_ylim(0, 1.05)
            axis.set_title(f"{constitution_id} on {gold_set}.jsonl", fontsize=9)
            axis.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"Non-evasive wording, old vs new version ({summary['model']}; 95% bootstrap)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


MEASURES = (
    ("probe_refusal_win", "probe: refusal wins"),
    ("benign_refusal_win", "benign: refusal beats gold answer"),
    ("benign_refusal_logodds", "benign: log-odds toward refusal"),
    ("harmful_refusal_win", "harmful: refusal beats harm"),
    ("harmful_refusal_logodds", "harmful: log-odds toward refusal"),
    ("agreement", "gold agreement"),
)


def markdown(summary: dict[str, Any]) -> str:
    """The tables bench/NOTES.md shows, from evasive.json."""

    def cell(estimate: dict[str, float]) -> str:
        if not estimate["n"]:
            return "—"
        value, low, high = estimate["value"], estimate["low"], estimate["high"]
        return f"{value:.2f} [{low:.2f}, {high:.2f}] n={estimate['n']}"

    lines = ["| constitution | set | measure | old | new |", "|---|---|---|---|---|"]
    for constitution_id, entry in summary["constitutions"].items():
        for gold_set in GOLD_SETS:
            for key, name in MEASURES:
                old, new = (entry[v]["all"][gold_set][key] for v in ("old", "new"))
                if old["n"] or new["n"]:
                    lines.append(
                        f"| {constitution_id} | {gold_set} | {name} | {cell(old)} | {cell(new)} |"
                    )
    for constitution_id, entry in summary["constitutions"].items():
        for gold_set, groups in entry["shift_toward_refusal"].items():
            for group, estimate in groups.items():
                if estimate["n"]:
                    value, low, high = estimate["value"], estimate["low"], estimate["high"]
                    lines.append(
                        f"| {constitution_id} | {gold_set} | {group}: new − old log-odds "
                        f"toward refusal (paired) | | {value:+.3f} [{low:+.3f}, {high:+.3f}] "
                        f"n={estimate['n']} |"
                    )
    keys = (
        "benign_refusal_win", "benign_refusal_logodds", "harmful_refusal_win",
        "harmful_refusal_logodds",
    )  # fmt: skip
    lines += [
        "",
        "| constitution | principle | set | "
        + " | ".join(k.replace("_", " ") for k in keys)
        + " |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(values: dict[str, Any]) -> str:
        return " | ".join(
            f"{values[k]['value']:+.3f}" if "logodds" in k else f"{values[k]['value']:.2f}"
            for k in keys
        )

    for constitution_id, entry in summary["constitutions"].items():
        old, new = entry["old"]["per_principle"], entry["new"]["per_principle"]
        # JSON, not ==: an empty measure's NaN never equals itself.
        same = [p for p in old if p in new and json.dumps(old[p]) == json.dumps(new[p])]
        for gold_set in GOLD_SETS:
            if not entry["new"]["all"][gold_set]["benign_refusal_win"]["n"]:
                continue
            for version, table in (("old", old), ("new", new)):
                for principle, by_set in table.items():
                    if principle not in same:
                        name = f"{principle} ({version})"
                        lines.append(
                            f"| {constitution_id} | {name} | {gold_set} | {row(by_set[gold_set])} |"
                        )
            ranges = []
            for k in keys:
                values = [old[p][gold_set][k]["value"] for p in same]
                fmt = "{:+.3f}" if "logodds" in k else "{:.2f}"
                ranges.append(f"{fmt.format(min(values))} to {fmt.format(max(values))}")
            lines.append(
                f"| {constitution_id} | the {len(same)} unchanged | {gold_set} | "
                + " | ".join(ranges)
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refusals", type=int, default=1, help="how many EVASIVE_REFUSALS")
    parser.add_argument("--budget", type=float, default=400, help="engine seconds this run")
    parser.add_argument("--check", type=int, default=4, help="pairs re-labeled per version")
    parser.add_argument("--report-only", action="store_true", help="no engine: the cache")
    parser.add_argument("--markdown", action="store_true", help="print the notes' tables")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from cai_judge.labeling.constitution import ConstitutionRegistry
    from cai_judge.labeling.probes import EVASIVE_REFUSALS

    registry = ConstitutionRegistry.with_builtins()
    spec, members = union_constitution(registry)
    args.members = members
    refusals = EVASIVE_REFUSALS[: args.refusals]
    items = build_items(refusals)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    load_cache(items, spec.version)
    model = MODEL.read_text() if MODEL.exists() else "default"
    if not args.report_only and any(not i.margins for i in items):
        model = asyncio.run(score(items, spec, [registry.resolve(r) for r in members], args))
    scored = [i for i in items if i.margins]
    gold = {
        (g, row["id"]): row["preferred"]
        for g, path in GOLD_SETS.items()
        for row in map(json.loads, path.read_text().splitlines())
    }
    summary: dict[str, Any] = {
        "model": model,
        "refusals": dict(refusals),
        "pairs_planned": len(items),
        "pairs_scored": len(scored),
        "union_principles": len(spec.principles),
        "check": json.loads(CHECK.read_text()) if CHECK.exists() else None,
        "constitutions": {},
    }
    for constitution_id, old in CONSTITUTIONS:
        entry: dict[str, Any] = {}
        for version, ref in (("old", old), ("new", constitution_id)):
            real = registry.resolve(ref)
            union_ids = members[f"{real.id}@{real.version}"]
            entry[version] = {
                "version": real.version,
                "all": rates(scored, gold, union_ids, args),
                "per_principle": {
                    p.id: rates(scored, gold, [u], args)
                    for p, u in zip(real.principles, union_ids, strict=True)
                },
            }
        entry["shift_toward_refusal"] = paired_shift(
            scored,
            gold,
            members[f"{constitution_id}@{entry['old']['version']}"],
            members[f"{constitution_id}@{entry['new']['version']}"],
            args,
        )
        summary["constitutions"][constitution_id] = entry
    OUT.write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary)
    print(f"wrote {OUT} and {PLOT} ({len(scored)}/{len(items)} pairs scored)", file=sys.stderr)
    if args.markdown:
        print(markdown(summary))


if __name__ == "__main__":
    main()
