"""`calibrate` → `label --calibration` → `export --calibration` as a user runs them: real
subprocesses, the real engine, the tiny model (its labels are random, so nothing here
asserts their quality; `--allow-reversal` lets a random judge be fitted either way)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai_judge.labeling.calibration import CalibrationProfile, read_profile
from cai_judge.labeling.schema import ConstitutionRef
from tests.test_cli import read_labels, run_cli

GOLD = Path(__file__).resolve().parents[1] / "examples" / "gold" / "gold.jsonl"


@pytest.mark.engine
def test_calibrate_then_label_and_export_with_the_profile(tmp_path: Path, tiny_model_dir: Path):
    gold_rows = [json.loads(line) for line in GOLD.read_text().splitlines()][:36]
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in gold_rows))
    profile_path = tmp_path / "profiles" / "tiny.json"
    model = ["--model", str(tiny_model_dir), "--constitution", "helpful-harmless"]

    fitted = run_cli(
        "calibrate", str(gold), "-o", str(profile_path), *model, "--length-control",
        "--allow-reversal", "--bootstrap", "200", "--folds", "4", cwd=tmp_path,
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    profile = read_profile(profile_path)
    assert profile.length_control and profile.key.constitution.id == "helpful-harmless"
    report = json.loads((tmp_path / "profiles" / "tiny-report" / "calibration.json").read_text())
    assert report["profile"]["hash"] == profile.hash and report["folds"] == 4
    assert report["gold"]["scored"] == 36 and len(report["pairs"]) == 36
    assert "cross_validated" in report and "ECE" in fitted.stdout
    assert (tmp_path / "profiles" / "tiny-report" / "calibration.html").exists()

    pairs = tmp_path / "pairs.jsonl"
    keep = ("id", "prompt", "response_a", "response_b")
    pairs.write_text("".join(json.dumps({k: r[k] for k in keep}) + "\n" for r in gold_rows[:6]))
    labels_path = tmp_path / "labels.jsonl"
    label_args = ["label", str(pairs), "-o", str(labels_path), *model]
    labeled = run_cli(*label_args, "--calibration", str(profile_path), cwd=tmp_path)
    assert labeled.returncode == 0, labeled.stderr[-3000:]
    labels = read_labels(labels_path)
    assert len(labels) == 6
    for found in labels:
        provenance = found["calibration"]
        assert isinstance(provenance, dict) and provenance["profile"] == profile.hash
        assert found["margin"] != provenance["raw_margin"]

    # Resuming without the profile would mix raw and calibrated labels in one file.
    resumed = run_cli(*label_args, cwd=tmp_path)
    assert resumed.returncode == 2
    assert f"--calibration: the file has {profile.hash}" in resumed.stderr

    rows_path = tmp_path / "train.jsonl"
    exported = run_cli(
        "export", str(labels_path), "--pairs", str(pairs), "-o", str(rows_path),
        "--calibration", str(profile_path), "--model", str(tiny_model_dir), cwd=tmp_path,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    by_id = {str(found["id"]): found for found in labels}
    for row in read_labels(rows_path):
        found = by_id[str(row["id"])]
        p_a, margin = float(found["p_a"]), float(found["margin"])  # type: ignore[arg-type]
        assert row["calibration"] == profile.hash
        assert row["margin"] == abs(margin)
        assert row["p_chosen"] == (p_a if found["preferred"] == "a" else 1 - p_a)
    assert "calibration" in json.loads((tmp_path / "train.jsonl.columns.json").read_text())

    # A profile for another constitution is refused before anything is written.
    other = CalibrationProfile.create(
        profile.key.model_copy(
            update={"constitution": ConstitutionRef(id="harmless", version="f" * 64)}
        ),
        profile.terms,
        profile.fitted_on,
        length_control=True,
    )
    other_path = tmp_path / "other.json"
    other_path.write_text(other.to_json())
    refused = run_cli(
        "export", str(labels_path), "--pairs", str(pairs), "-o", str(tmp_path / "no.jsonl"),
        "--calibration", str(other_path), "--model", str(tiny_model_dir), cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2
    assert f"{labels_path}:1: calibration profile {other.short_hash} does not apply" in (
        refused.stderr
    )
    assert "the constitution version" in refused.stderr
    assert not (tmp_path / "no.jsonl").exists()
