"""`calibrate --unlabeled` on the policy's own samples (issue 32): a rewards-shaped file of
groups (`{id, prompt, completions}`) is paired within each group and fitted without gold, as
a GRPO run would (README, "GRPO with length control"). The real engine and the tiny model:
its margins are random, so only the path and the profile's record are asserted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cai_judge.labeling.calibration_profile import read_profile
from tests.support.cli import run_cli

GROUPS = [
    {
        "id": f"g{g}",
        "prompt": f"Question {g}: how do I keep a houseplant alive?",
        "completions": [
            "Water it.",
            "Water it weekly and give it some light.",
            "Water it once a week, keep it near a bright window, and feed it in spring.",
            "Check the soil before watering, give it bright indirect light, repot it when the "
            "roots fill the pot, and wipe the leaves so they can breathe.",
        ],
    }
    for g in range(3)
]


@pytest.mark.engine
def test_a_groups_file_fits_a_length_only_profile(tmp_path: Path, tiny_model_dir: Path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(g) + "\n" for g in GROUPS))
    fitted = run_cli(
        "calibrate", "--unlabeled", str(samples), "-o", str(tmp_path / "length.json"),
        "--model", str(tiny_model_dir), "--constitution", "harmless", "--principles", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    profile = read_profile(tmp_path / "length.json")
    assert profile.fitted_on is None and profile.terms.inverse_temperature == 1.0
    record = profile.length_fitted_on
    assert record is not None and record.source == "unlabeled"
    # 3 groups of 4 completions: 6 pairs each.
    assert (record.path, record.pairs) == ("samples.jsonl", 18)
    assert record.sha256 == hashlib.sha256(samples.read_bytes()).hexdigest()
    assert profile.key.selection == 2
    report = json.loads((tmp_path / "length-report" / "calibration.json").read_text())
    assert report["raw_prefers_longer"]["n"] == 18
