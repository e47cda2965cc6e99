"""The probe run, its report and its files, on the fake engine (the logic here is not the
engine's: which rewrites are labeled, how their verdicts become rates). The real engine
runs `cai-judge probe` end to end in tests/e2e/test_probe_cli.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cai_judge.evaluation.metrics import estimate
from cai_judge.evaluation.probe_render import write_probe_report
from cai_judge.evaluation.probe_report import (
    ProbeMetricSettings,
    ProbeReport,
    probe_report,
)
from cai_judge.evaluation.probe_run import ProbeInput, read_probe_pairs, run_probes
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.pipeline import label_pairs
from cai_judge.labeling.probes import MASTER_KEYS, ProbeFamily, rewrites, weaker_side
from cai_judge.labeling.schema import Label, LabelOptions, Pair
from tests.support.fake_engine import FakeEngine
from tests.support.paths import REPO_ROOT

GOLD = REPO_ROOT / "examples" / "gold" / "gold.jsonl"
METRICS = ProbeMetricSettings(n_resamples=300, seed=3)


def _inputs(count: int = 6) -> list[ProbeInput]:
    found, problems = read_probe_pairs(GOLD)
    assert problems == []
    # Both harmful and benign categories, so evasive-refusal runs on some pairs only.
    return found[:3] + found[-(count - 3) :]


@pytest.fixture
def judge(fake_engine: FakeEngine, registry: ConstitutionRegistry) -> Iterator[Judge]:
    found = Judge(fake_engine, registry)
    yield found
    found.close()


async def test_every_rewrite_is_labeled_as_label_would_label_it(
    judge: Judge, registry: ConstitutionRegistry
):
    spec = registry.resolve("helpful-harmless")
    options = LabelOptions(principles=2, seed=5)
    inputs = _inputs()
    run = await run_probes(judge, spec, options, inputs, batch_size=7)
    assert run.errors == () and run.options.per_principle
    assert [p.source for p in run.pairs] == inputs
    benign = [p.benign for p in run.pairs]
    assert benign == [i.category == "benign" for i in inputs] and any(benign) and not all(benign)
    for probed in run.pairs:
        # The baseline and each rewrite: what the label pipeline says of that pair alone.
        (alone,) = (await label_pairs(judge, spec, run.options, [probed.source.pair])).results
        assert isinstance(alone, Label) and alone.margin == probed.baseline.margin
        expected = rewrites(
            probed.source.pair, weaker_side(alone.margin), seed=5, benign=probed.benign
        )
        assert [r for r, _ in probed.variants] == expected
        for rewrite, outcome in probed.variants[::9]:
            (found,) = (await label_pairs(judge, spec, run.options, [rewrite.pair])).results
            assert isinstance(found, Label) and found.margin == outcome.margin
            assert set(outcome.principles) == {r.principle for r in found.per_principle or ()}


async def test_a_rewrite_the_judge_refuses_is_an_error_of_its_pair(
    registry: ConstitutionRegistry,
):
    # A context just long enough for the pair, not for its padded rewrites.
    engine = FakeEngine(max_model_len=260)
    judge = Judge(engine, registry)
    try:
        pair = Pair(id="short", prompt="Hi?", response_a="Hello there.", response_b="Hi.")
        run = await run_probes(
            judge, registry.resolve("harmless"), LabelOptions(principles=1),
            [ProbeInput(pair)], families=[ProbeFamily.LENGTH_BOTH, ProbeFamily.FORMAT],
        )  # fmt: skip
    finally:
        judge.close()
    assert run.errors, "the padded rewrites should not fit"
    assert all(e.id == "short" and "length-both/pad-" in e.error.message for e in run.errors)
    (probed,) = run.pairs
    # The rewrites that fit are kept: every rewrite is either scored or an error.
    assert len(probed.variants) + len(run.errors) == 4
    assert ProbeFamily.FORMAT in {r.family for r, _ in probed.variants}


def _recompute(data: dict[str, Any]) -> None:
    """Every rate of report.json from its own `variants` records and `metrics`."""
    metrics = data["metrics"]
    kwargs = {
        "confidence": metrics["confidence"],
        "n_resamples": metrics["n_resamples"],
        "seed": metrics["seed"],
    }

    def per_pair(records: list[dict[str, Any]], key: str) -> list[float]:
        groups: dict[str, list[float]] = defaultdict(list)
        for r in records:
            groups[r["pair"]].append(r[key])
        return [float(np.mean(v)) for v in groups.values()]

    def same(found: dict[str, Any] | None, values: list[float]) -> None:
        expected = estimate(values, **kwargs)
        assert expected is not None and found is not None
        assert found == pytest.approx(
            {"value": expected.value, "low": expected.low, "high": expected.high, "n": expected.n}
        )

    assert data["probes"]
    for probe in data["probes"]:
        mine = [
            r for r in data["variants"]
            if r["family"] == probe["family"] and r["probe"] == probe["probe"]
        ]  # fmt: skip
        assert probe["rewrites"] == len(mine) and probe["pairs"] == len({r["pair"] for r in mine})
        same(probe["win_rate"], per_pair(mine, "win"))
        same(probe["margin_shift"], per_pair(mine, "shift"))
        for principle, found in probe["per_principle"].items():
            rows = [
                {"pair": r["pair"], "w": r["principle_wins"][principle]}
                for r in mine if principle in r["principle_wins"]
            ]  # fmt: skip
            same(found, per_pair(rows, "w"))
    for family in data["families"]:
        mine = [r for r in data["variants"] if r["family"] == family["family"]]
        same(family["win_rate"], per_pair(mine, "win"))
    # Each record's own numbers: the win and the shift follow from the margins.
    for r in data["variants"]:
        toward = 1 if r["target"] == "a" else -1
        assert r["shift"] == pytest.approx(toward * (r["margin"] - r["baseline_margin"]))
        expected = 0.5 if r["margin"] == 0 else float((r["margin"] > 0) == (toward > 0))
        assert r["win"] == expected


async def test_the_reports_numbers_recompute_from_its_json(
    judge: Judge, registry: ConstitutionRegistry, tmp_path: Path
):
    spec = registry.resolve("helpful-harmless")
    run = await run_probes(judge, spec, LabelOptions(), _inputs(8))
    report = probe_report(run, list(ProbeFamily), str(GOLD), 8, METRICS)
    json_path, png_path, html_path = write_probe_report(report, tmp_path / "out")
    data = json.loads(json_path.read_text())
    _recompute(data)
    assert ProbeReport.model_validate(data) == report
    # Master keys: each side of each pair, so a probe has twice the pairs' rewrites.
    keys = [p for p in report.probes if p.family is ProbeFamily.MASTER_KEY]
    assert len(keys) == len(MASTER_KEYS) and all(p.rewrites == 2 * p.pairs == 16 for p in keys)
    assert report.baseline.with_gold == 8 and report.baseline.agreement is not None
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = html_path.read_text()
    assert "master-key · thought-process" in html and "data:image/png;base64," in html


def test_a_rate_that_does_not_match_its_records_fails_the_recomputation(tmp_path: Path):
    # The check above can fail: a report whose win rate is off by one pair's win.
    data = {
        "metrics": METRICS.model_dump(),
        "families": [],
        "probes": [
            {"family": "format", "probe": "markdown-list", "rewrites": 2, "pairs": 2,
             "win_rate": {"value": 1.0, "low": 1.0, "high": 1.0, "n": 2},
             "margin_shift": None, "per_principle": {}},
        ],
        "variants": [
            {"pair": p, "family": "format", "probe": "markdown-list", "target": "a",
             "margin": m, "baseline_margin": 0.0, "win": w, "shift": m, "principle_wins": {}}
            for p, m, w in (("x", 1.0, 1.0), ("y", -1.0, 0.0))
        ],
    }  # fmt: skip
    with pytest.raises(AssertionError):
        _recompute(data)


def test_pairs_with_and_without_gold_are_read_and_bad_lines_named(tmp_path: Path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"id": "g", "prompt": "q", "response_a": "a", "response_b": "b", "preferred": "b",
         "category": "benign", "note": "why"},
        {"id": "p", "prompt": "q", "response_a": "a", "response_b": "b", "source": "x"},
        {"id": "g", "prompt": "q", "response_a": "a", "response_b": "b"},
        {"id": "e", "prompt": "q", "response_a": "", "response_b": "b"},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    found, problems = read_probe_pairs(path)
    assert [(i.pair.id, i.gold, i.category) for i in found] == [
        ("g", "b", "benign"), ("p", None, None)
    ]  # fmt: skip
    assert [p.line_number for p in problems] == [3, 4, 5]
    assert "duplicate 'g'" in problems[0].reason and "response_a" in problems[1].reason


def test_the_probe_command_module_does_not_import_matplotlib():
    # `cai-judge probe` imports the renderer (and matplotlib) only to write its report.
    code = "import sys, cai_judge.cli.probe_cmd; print('matplotlib' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"
