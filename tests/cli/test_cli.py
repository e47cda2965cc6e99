"""`cai-judge label` as a user runs it: a real subprocess, the real engine, the tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.cli import PAIRS, read_labels, run_cli, write_jsonl


def test_duplicate_ids_are_refused_up_front(tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [PAIRS[0], PAIRS[1], PAIRS[0]])
    result = run_cli("label", str(pairs), "-o", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert result.returncode == 2
    assert "duplicate pair id" in result.stderr and "'p0' on lines 1, 3" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_unknown_constitution(tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, PAIRS[:1])
    result = run_cli(
        "label", str(pairs), "-o", str(tmp_path / "o.jsonl"), "--constitution", "nope", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "unknown constitution 'nope'" in result.stderr


@pytest.mark.engine
def test_resume_after_partial_output_and_bad_lines(tmp_path: Path, tiny_model_dir: Path):
    pairs = tmp_path / "pairs.jsonl"
    rows: list[object] = [*PAIRS[:3], {"id": "bad", "prompt": "x", "response_a": ""}, *PAIRS[3:]]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    output = tmp_path / "labels.jsonl"
    args = ["label", str(pairs), "-o", str(output), "--model", str(tiny_model_dir),
            "--principles", "2"]  # fmt: skip

    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr[-2000:]
    assert f"{pairs}:4" in first.stderr and "response_a" in first.stderr
    assert "response_b: Field required" in first.stderr
    assert f"{pairs}:8" in first.stderr and "not valid JSON" in first.stderr
    labels = read_labels(output)
    assert sorted(str(label["id"]) for label in labels) == [p["id"] for p in PAIRS]

    # Simulate a run killed mid-write: two whole labels and half of a third survive.
    kept = output.read_text().splitlines(keepends=True)
    output.write_text(kept[0] + kept[1] + kept[2][:40])
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 1
    assert "resuming: 2 pair(s) already" in second.stderr
    resumed = read_labels(output)
    assert sorted(str(label["id"]) for label in resumed) == [p["id"] for p in PAIRS]
    by_id = {label["id"]: label for label in labels}
    for label in resumed:
        assert label["principles"] == by_id[label["id"]]["principles"]
        assert label["margin"] == pytest.approx(by_id[label["id"]]["margin"], abs=1e-4)

    # Everything labeled: a third run has nothing to do and starts no engine.
    third = run_cli(*args, cwd=tmp_path)
    assert "nothing to label" in third.stderr
    assert len(read_labels(output)) == len(PAIRS)

    # The labels export to reward-model training rows, with the column conventions beside.
    rows_path = tmp_path / "train.jsonl"
    exported = run_cli("export", str(output), "--pairs", str(pairs), "-o", str(rows_path),
                       cwd=tmp_path)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    rows = read_labels(rows_path)
    summary = re.search(
        r"exported (\d+) label\(s\): wrote (\d+) row\(s\).*skipped (\d+) tie\(s\), "
        r"(\d+) low-confidence, (\d+) without a pair; (\d+) bad line",
        exported.stderr,
    )
    assert summary, exported.stderr
    labels_read, written, ties, dropped, missing, bad = map(int, summary.groups())
    assert labels_read == len(PAIRS) and (dropped, missing, bad) == (0, 0, 0)
    assert written + ties == labels_read
    assert len(rows) == written
    exported_by_id = {label["id"]: label for label in resumed}
    assert {row["id"] for row in rows} == {
        pid for pid, label in exported_by_id.items() if label["preferred"] != "tie"
    }
    by_pair = {p["id"]: p for p in PAIRS}
    for row in rows:
        label = exported_by_id[row["id"]]
        pair = by_pair[str(row["id"])]
        winner = "response_a" if label["preferred"] == "a" else "response_b"
        assert row["chosen"] == pair[winner]
        assert row["margin"] == abs(float(label["margin"]))  # type: ignore[arg-type]
        assert 0.5 <= float(row["p_chosen"]) <= 1  # type: ignore[arg-type]
    assert "TRL" in (tmp_path / "train.jsonl.columns.json").read_text()
