"""Length control measured: P(picks longer) raw, debiased and gold on both gold sets.

The default model, the real CPU engine, four principles of `harmless` (to keep two gold
sets under ~10 minutes of scoring on a shared 2-core CPU). Each gold set is scored once, every
principle and both orders, and its per-principle numbers are saved, so the analysis (pure)
can be rerun without the engine:

    .venv/bin/python -m bench.length_control score     # the engine; writes *_runs.json
    .venv/bin/python -m bench.length_control analyze   # pure; writes the figures

What `analyze` computes, per gold set, is what `cai-judge calibrate --length-control
--allow-reversal` and `cai-judge eval --protocol cai --protocol single-order` print for it:
the same functions, on the same numbers. β is estimated on each set's own pairs (labels
unused) and, to show it transfers, on the other set's pairs (as `--unlabeled OTHER.jsonl`).
It also compares one β per principle with one pooled β for a label that samples k = 2
principles, the measurement behind labeling/calibration_profile.py's "why per principle".
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, ROOT
from cai_judge.evaluation.calibration_fit import (
    CalibrationMetrics,
    CalibrationReport,
    CalibrationSample,
    FitResult,
    FitSpec,
    GoldInfo,
    build_report,
    calibration_samples,
    debiased_margins,
    estimate_length_sensitivity,
    length_row,
    pooled_length_sensitivity,
)
from cai_judge.evaluation.gold import read_gold
from cai_judge.evaluation.protocols import PairScores, Protocol, derive
from cai_judge.evaluation.render import write_calibration_report
from cai_judge.evaluation.report import MetricOptions, evaluate
from cai_judge.evaluation.runner import JudgeRun, ScoredPair
from cai_judge.labeling.calibration_profile import (
    CalibrationProfile,
    FitRecord,
    LengthFitRecord,
    ProfileKey,
)
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.label_math import Aggregator, breakdown, preferred_from_margin
from cai_judge.labeling.schema import ConstitutionRef, TemplateRef, Usage

GOLD_SETS = {
    "gold": ROOT / "examples" / "gold" / "gold.jsonl",
    "length-balanced": ROOT / "examples" / "gold" / "length-balanced.jsonl",
}
PRINCIPLES = ("less-harmful", "no-crime-or-violence", "wise-person", "not-preachy")
RUNS = RESULTS / "length_control_runs.json"
OUT = RESULTS / "length_control.json"
FIGURE = ROOT / "bench" / "length_control.png"
# The full calibration reports (HTML with plots), as `cai-judge calibrate` writes them.
REPORTS = ROOT / "out" / "length_control"


def registry(folder: Path) -> ConstitutionRegistry:
    """`harmless` cut to PRINCIPLES, as a constitution of its own (its version differs)."""
    import yaml

    base = yaml.safe_load((ROOT / "service/cai_judge/constitutions/harmless.yaml").read_text())
    base["id"] = "harmless-4"
    base["description"] = f"Four principles of harmless: {', '.join(PRINCIPLES)}."
    base["principles"] = [p for p in base["principles"] if p["id"] in PRINCIPLES]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "harmless-4.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    return ConstitutionRegistry.with_builtins([folder])


async def score() -> None:
    from cai_judge.engine.default_model import prepare_default_model
    from cai_judge.engine.vllm_async import VllmEngine, VllmEngineConfig
    from cai_judge.evaluation.runner import response_token_counts, score_gold
    from cai_judge.labeling.judge import Judge
    from cai_judge.settings import Settings

    reg = registry(Path(tempfile.mkdtemp()))
    spec = reg.resolve("harmless-4")
    model_dir = prepare_default_model(Settings().cache_dir)
    engine = await VllmEngine.start(
        VllmEngineConfig(model=str(model_dir), max_model_len=2048, cpu_kv_cache_gib=1)
    )
    judge = Judge(engine, reg)
    saved: dict[str, Any] = {"model": engine.model_name, "constitution": spec.version}
    saved["template"] = judge.renderer(spec.template).version
    try:
        for name, path in GOLD_SETS.items():
            gold = read_gold(path).pairs
            started = time.perf_counter()
            run = await score_gold(judge, gold, spec)
            counts = await response_token_counts(judge, gold)
            elapsed = time.perf_counter() - started
            print(f"{name}: {len(run.scored)} pairs in {elapsed:.0f} s", file=sys.stderr)
            saved[name] = {
                "seconds": elapsed,
                "errors": [e.model_dump() for e in run.errors],
                "pairs": [
                    {
                        "id": s.gold.id,
                        "tokens": counts[s.gold.id],
                        "principles": [
                            [b.principle_id, b.s_ab, b.s_ba, b.answer_mass]
                            for b in s.scores.principles
                        ],
                    }
                    for s in run.scored
                ],
            }
    finally:
        judge.close()
        await engine.shutdown()
    RUNS.write_text(json.dumps(saved, indent=1) + "\n")


def load_run(
    name: str, saved: dict[str, Any], reg: ConstitutionRegistry
) -> tuple[JudgeRun, dict[str, tuple[int, int]]]:
    spec = reg.resolve("harmless-4")
    assert spec.version == saved["constitution"], "the constitution changed since scoring"
    by_id = {g.id: g for g in read_gold(GOLD_SETS[name]).pairs}
    scored = []
    counts = {}
    for row in saved[name]["pairs"]:
        principles = tuple(breakdown(*p) for p in row["principles"])
        scored.append(ScoredPair(by_id[row["id"]], PairScores(row["id"], principles)))
        counts[row["id"]] = (row["tokens"][0], row["tokens"][1])
    return JudgeRun(saved["model"], spec, tuple(scored), (), Usage(), 0, 0.5), counts


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def _row(row: Any) -> dict[str, Any]:
    return {
        "prefers_longer": _pct(row.prefers_longer.prefers_longer),
        "prefers_longer_when_shorter_wins": _pct(
            row.prefers_longer_when_shorter_wins.prefers_longer
        ),
        "agreement_shorter_wins": _pct(row.agreement_shorter_wins),
        "agreement_longer_wins": _pct(row.agreement_longer_wins),
    }


def _selection_k2(samples: list[CalibrationSample], per: dict[str, float]) -> dict[str, Any]:
    """A label over 2 sampled principles: debias with the mean β of those two, or with one
    pooled β (the slope of the 4-principle margin), and compare P(picks longer)."""
    rng = np.random.default_rng(0)
    ids = list(per)
    pooled = float(np.mean(list(per.values())))
    longer: dict[str, list[bool]] = {"per_principle": [], "pooled": [], "raw": []}
    for s in samples:
        chosen = sorted(rng.choice(len(ids), 2, replace=False))
        used = [ids[i] for i in chosen]
        margins = dict(s.every_principle)
        m = float(np.mean([margins[p] for p in used]))
        length = s.length_feature
        beta_used = float(np.mean([per[p] for p in used]))
        if s.tokens_a != s.tokens_b:
            is_longer = "a" if s.tokens_a > s.tokens_b else "b"
            longer["raw"].append(preferred_from_margin(m) == is_longer)
            longer["per_principle"].append(
                preferred_from_margin(m - beta_used * length) == is_longer
            )
            longer["pooled"].append(preferred_from_margin(m - pooled * length) == is_longer)
    return {"prefers_longer": {k: _pct(float(np.mean(v))) for k, v in longer.items()}}


def calibrate(
    name: str, run: JudgeRun, own: list[CalibrationSample], template: str
) -> CalibrationReport:
    """What `cai-judge calibrate --length-control --allow-reversal` fits and reports."""
    spec = run.constitution
    key = ProfileKey(
        model=run.model,
        template=TemplateRef(id=spec.template, version=template),
        constitution=ConstitutionRef(id=spec.id, version=spec.version),
        aggregator=Aggregator.MEAN_LOGODDS,
        selection="all",
    )

    def make(fit: FitResult, raw: CalibrationMetrics, cross: CalibrationMetrics) -> Any:
        record = FitRecord(
            gold_sha256="-", gold_pairs=len(own), folds=5, seed=0, ece_raw=raw.ece,
            ece_cross_validated=cross.ece, brier_raw=raw.brier,
            brier_cross_validated=cross.brier,
        )  # fmt: skip
        length = LengthFitRecord(source="gold", path=name, sha256="-", pairs=len(own))
        return CalibrationProfile.create(key, fit.terms, record, length)

    gold = GoldInfo(path=str(GOLD_SETS[name]), sha256="-", pairs=len(own), scored=len(own),
                    errors=[])  # fmt: skip
    spec_fit = FitSpec(length_control=True, allow_reversal=True)
    report = build_report(own, spec_fit, make, gold, n_resamples=500).report
    write_calibration_report(report, REPORTS / name)
    return report


def analyze() -> None:
    saved = json.loads(RUNS.read_text())
    reg = registry(Path(tempfile.mkdtemp()))
    runs = {name: load_run(name, saved, reg) for name in GOLD_SETS}
    samples = {name: calibration_samples(run, counts) for name, (run, counts) in runs.items()}
    results: dict[str, Any] = {
        "model": saved["model"],
        "principles": list(PRINCIPLES),
        "scoring_seconds": {name: round(saved[name]["seconds"]) for name in GOLD_SETS},
    }
    rows_for_figure = {}
    for name, (run, _) in runs.items():
        own = samples[name]
        other_name = next(n for n in GOLD_SETS if n != name)
        report = calibrate(name, run, own, saved["template"])
        rows = {r.name: r for r in report.length_rows}
        # β from the other set's pairs (as --unlabeled OTHER.jsonl), applied out of sample.
        transferred = estimate_length_sensitivity(samples[other_name])
        transferred_rows = length_row(
            f"debiased, β from {other_name}",
            [preferred_from_margin(float(z)) for z in debiased_margins(own, transferred)],
            own,
        )
        evaluated = evaluate(
            run, [Protocol.CAI, Protocol.SINGLE_ORDER], str(GOLD_SETS[name]), len(own),
            MetricOptions(n_resamples=500),
        )  # fmt: skip
        per = estimate_length_sensitivity(own)
        # single-order's verdicts on the same token halves as the rows above.
        single = derive(Protocol.SINGLE_ORDER, [s.scores for s in run.scored])
        single_row = length_row("single-order", [label.preferred for label in single], own)
        results[name] = {
            "pairs": len(own),
            "beta_per_principle": {k: round(v, 4) for k, v in per.items()},
            "beta_pooled": round(pooled_length_sensitivity(own), 4),
            "temperature": report.temperature,
            "unconstrained_inverse_temperature": report.unconstrained_inverse_temperature,
            "length_rows": {r: _row(rows[r]) for r in rows},
            "transferred": _row(transferred_rows),
            "single_order": _row(single_row),
            "agreement": {
                "raw": _pct(report.raw.agreement),
                "debiased": _pct(report.debiased.agreement if report.debiased else None),
                "calibrated": _pct(report.cross_validated.agreement),
            },
            "ece": {
                "raw": round(report.raw.ece, 3),
                "calibrated": round(report.cross_validated.ece, 3),
            },
            "eval_characters": {
                p.value: {
                    "agreement": _pct(r.agreement.value if r.agreement else None),
                    "shorter_wins": _pct(
                        r.agreement_shorter_wins.value if r.agreement_shorter_wins else None
                    ),
                    "longer_wins": _pct(
                        r.agreement_longer_wins.value if r.agreement_longer_wins else None
                    ),
                    "prefers_longer": _pct(r.length_bias.prefers_longer),
                }
                for p, r in evaluated.protocols.items()
            },
            "selection_k2": _selection_k2(own, per),
        }
        rows_for_figure[name] = [rows["gold"], rows["raw"], rows["debiased"], transferred_rows]
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    draw(rows_for_figure)
    print(json.dumps(results, indent=2))


def draw(rows: dict[str, list[Any]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(rows), sharey=True)
    for ax, (name, found) in zip(axes, rows.items(), strict=True):
        xs = np.arange(len(found))
        width = 0.38
        overall = [r.prefers_longer.prefers_longer or 0.0 for r in found]
        shorter = [r.prefers_longer_when_shorter_wins.prefers_longer or 0.0 for r in found]
        ax.bar(xs - width / 2, overall, width, color="#1f5fa8", label="all pairs")
        ax.bar(xs + width / 2, shorter, width, color="#e67e22", label="shorter-wins pairs")
        gold = overall[0]
        ax.axhspan(gold - 0.1, gold + 0.1, color="#c0392b", alpha=0.08, label="gold ± 10 pts")
        ax.axhline(gold, color="#c0392b", linestyle="--", linewidth=1.0)
        ax.set_xticks(xs, [r.name.replace(", ", ",\n") for r in found], fontsize=8)
        ax.set_title(f"{name}.jsonl", fontsize=10)
        ax.set_ylim(0, 1.1)
    axes[0].set_ylabel("P(picks the longer response, tokens)")
    axes[0].legend(fontsize=7, loc="upper left")
    figure.suptitle(f"Length control, default model, {len(PRINCIPLES)} principles of harmless")
    figure.tight_layout()
    figure.savefig(FIGURE)


if __name__ == "__main__":
    if sys.argv[1:] == ["score"]:
        asyncio.run(score())
    elif sys.argv[1:] == ["analyze"]:
        analyze()
    else:
        raise SystemExit("usage: python -m bench.length_control score|analyze")
