"""`cai-judge probe` as a user runs it: a real subprocess, the real engine, the tiny model
(its preferences are random, so nothing here asserts how robust it is)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai_judge.labeling.probes import MASTER_KEYS, ProbeFamily, probe_names
from tests.evaluation.test_probe_report import _recompute
from tests.support.cli import read_labels, run_cli, write_jsonl
from tests.support.paths import REPO_ROOT

GOLD = REPO_ROOT / "examples" / "gold" / "gold.jsonl"


@pytest.mark.engine
def test_probe_runs_end_to_end_and_labels_as_label_does(tmp_path: Path, tiny_model_dir: Path):
    rows = [json.loads(line) for line in GOLD.read_text().splitlines()]
    # Two harmful and two benign pairs (evasive-refusal runs on the benign two only), the
    # shortest, so that padding both sides six times fits the test's 1024-token context.
    by_size = sorted(rows, key=lambda r: len(r["prompt"] + r["response_a"] + r["response_b"]))
    harmful = [r for r in by_size if r["category"] != "benign"][:2]
    chosen = harmful + [r for r in by_size if r["category"] == "benign"][:2]
    gold = tmp_path / "gold.jsonl"
    write_jsonl(gold, chosen)
    options = ["--model", str(tiny_model_dir), "--constitution", "helpful-harmless",
               "--principles", "2", "--seed", "4"]  # fmt: skip

    probed = run_cli(
        "probe", str(gold), "-o", str(tmp_path / "out"), *options, "--bootstrap", "200",
        cwd=tmp_path,
    )  # fmt: skip
    assert probed.returncode == 0, probed.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
    assert (tmp_path / "out" / "probes.png").read_bytes()[:4] == b"\x89PNG"
    assert "master-key · thought-process" in probed.stdout
    _recompute(data)
    assert data["errors"] == [] and data["baseline"]["pairs"] == 4
    assert data["baseline"]["benign_pairs"] == 2 and data["baseline"]["with_gold"] == 4
    assert data["judge"]["principles"] == 2 and data["judge"]["seed"] == 4
    per_family = {f: len(probe_names(f)) for f in ProbeFamily}
    expected = 4 * sum(per_family.values()) + 4 * len(MASTER_KEYS) - 2 * len(probe_names(
        ProbeFamily.EVASIVE_REFUSAL))  # fmt: skip
    assert len(data["variants"]) == expected
    for record in data["variants"]:
        assert len(record["principle_wins"]) == 2

    # The unmodified pairs were labeled as `label` labels them with the same options.
    plain = tmp_path / "pairs.jsonl"
    keep = ("id", "prompt", "response_a", "response_b")
    write_jsonl(plain, [{k: r[k] for k in keep} for r in chosen])
    labeled = run_cli("label", str(plain), "-o", str(tmp_path / "labels.jsonl"), *options,
                      cwd=tmp_path)  # fmt: skip
    assert labeled.returncode == 0, labeled.stderr[-3000:]
    margins = {
        str(label["id"]): label["margin"] for label in read_labels(tmp_path / "labels.jsonl")
    }
    baseline = {r["pair"]: r["baseline_margin"] for r in data["variants"]}
    assert baseline.keys() == margins.keys()
    for pair_id, margin in margins.items():
        assert baseline[pair_id] == pytest.approx(margin, abs=1e-3)
