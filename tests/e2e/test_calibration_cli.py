"""`calibrate` → `label --calibration` → `export --calibration` as a user runs them: real
subprocesses, the real engine, the tiny model (its labels are random, so nothing here
asserts their quality; `--allow-reversal` lets a random judge be fitted either way)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cai_judge.labeling.calibration_profile import CalibrationProfile, read_profile
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.schema import ConstitutionRef
from tests.support.cli import read_labels, run_cli
from tests.support.paths import REPO_ROOT

GOLD = REPO_ROOT / "examples" / "gold" / "gold.jsonl"
BALANCED = GOLD.with_name("length-balanced.jsonl")
HELPFUL_HARMLESS = ConstitutionRegistry.with_builtins().resolve("helpful-harmless").principle_ids


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
    # β per principle, estimated on the gold set's own pairs, which the profile names.
    assert profile.length_fitted_on is not None and profile.length_fitted_on.source == "gold"
    assert profile.length_fitted_on.sha256 == hashlib.sha256(gold.read_bytes()).hexdigest()
    assert profile.fitted_on is not None and profile.fitted_on.gold_pairs == 36
    assert profile.terms.length_sensitivity is not None
    assert list(profile.terms.length_sensitivity) == HELPFUL_HARMLESS
    report = json.loads((tmp_path / "profiles" / "tiny-report" / "calibration.json").read_text())
    assert report["profile"]["hash"] == profile.hash and report["folds"] == 4
    assert [r["name"] for r in report["length_rows"]] == ["gold", "raw", "debiased", "calibrated"]
    assert report["length"]["sensitivity"] == profile.terms.length_sensitivity
    assert "agree | shorter wins" in fitted.stdout
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
        profile.length_fitted_on,
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


@pytest.mark.engine
def test_unlabeled_pairs_fit_the_length_debiasing_alone_and_eval_reports_the_halves(
    tmp_path: Path, tiny_model_dir: Path
):
    balanced = [json.loads(line) for line in BALANCED.read_text().splitlines()]
    keep = ("id", "prompt", "response_a", "response_b")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({k: r[k] for k in keep}) + "\n" for r in balanced[:20]))
    model = ["--model", str(tiny_model_dir), "--constitution", "helpful-harmless"]

    fitted = run_cli(
        "calibrate", "--unlabeled", str(pairs), "-o", str(tmp_path / "length.json"), *model,
        cwd=tmp_path,
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    profile = read_profile(tmp_path / "length.json")
    # No gold: β only, no temperature, and the profile names the pairs β came from.
    assert profile.fitted_on is None and profile.terms.inverse_temperature == 1.0
    assert profile.length_fitted_on is not None
    assert profile.length_fitted_on.source == "unlabeled"
    assert profile.length_fitted_on.path == "pairs.jsonl"
    assert profile.length_fitted_on.sha256 == hashlib.sha256(pairs.read_bytes()).hexdigest()
    assert profile.length_fitted_on.pairs == 20
    assert profile.terms.length_sensitivity is not None
    assert list(profile.terms.length_sensitivity) == HELPFUL_HARMLESS
    report = json.loads((tmp_path / "length-report" / "calibration.json").read_text())
    assert report["length"]["sensitivity"] == profile.terms.length_sensitivity
    assert report["raw_prefers_longer"]["n"] == 20
    assert "data:image/png" in (tmp_path / "length-report" / "calibration.html").read_text()
    assert "debiased" in fitted.stdout

    # With a gold set too, β still comes from the unlabeled pairs and T from gold.
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in balanced[20:56]))
    both = run_cli(
        "calibrate", str(gold), "--unlabeled", str(pairs), "-o", str(tmp_path / "both.json"),
        *model, "--allow-reversal", "--bootstrap", "200", "--folds", "4", cwd=tmp_path,
    )  # fmt: skip
    assert both.returncode == 0, both.stderr[-3000:]
    combined = read_profile(tmp_path / "both.json")
    assert combined.length_fitted_on == profile.length_fitted_on
    assert combined.fitted_on is not None and combined.fitted_on.gold_pairs == 36
    assert combined.terms.length_sensitivity is not None
    for pid, beta in profile.terms.length_sensitivity.items():
        assert combined.terms.length_sensitivity[pid] == pytest.approx(beta, rel=1e-3, abs=1e-6)

    # eval on the length-balanced set: agreement on each half, raw and through the profile.
    out = tmp_path / "eval"
    evaluated = run_cli(
        "eval", str(gold), "-o", str(out), *model, "--calibration", str(tmp_path / "length.json"),
        "--bootstrap", "200", cwd=tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    data = json.loads((out / "report.json").read_text())
    rows = balanced[20:56]
    shorter = sum(
        1 for r in rows
        if (len(r["response_a"]) < len(r["response_b"])) == (r["preferred"] == "a")
    )  # fmt: skip
    for found in data["protocols"].values():
        assert found["agreement_shorter_wins"]["n"] == shorter
        assert found["agreement_longer_wins"]["n"] == 36 - shorter
    length_rows = {r["name"]: r for r in data["calibrated"]["length_rows"]}
    assert list(length_rows) == ["gold", "raw", "calibrated"]
    assert length_rows["gold"]["agreement_shorter_wins"] == 1.0
    assert length_rows["gold"]["prefers_longer_when_shorter_wins"]["prefers_longer"] == 0.0
    assert "shorter wins" in evaluated.stdout and "longer wins" in evaluated.stdout
