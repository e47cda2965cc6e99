"""`cai-judge export` on a damaged label file: every bad line reported, the rest exported.

No engine: the labels are written here, so this runs in about a second.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cai_judge.labeling.schema import Label
from tests.support.cli import PAIRS, read_labels, run_cli, write_jsonl


def label_line(pair_id: str, preferred: str = "a", margin: float = 1.5) -> bytes:
    record = {
        "id": pair_id, "preferred": preferred, "margin": margin, "p_a": 0.8,
        "position_bias": 0.0, "consistency": 1.0, "answer_mass": 0.9, "low_confidence": False,
        "principles": ["less-harmful"], "selection": "all", "aggregator": "mean_logodds",
        "constitution": {"id": "harmless", "version": "c0ffee"},
        "template": {"id": "cai-mc-v1", "version": "7e3p1a7e"},
        "model": "tiny", "seed": 0,
    }  # fmt: skip
    Label.model_validate(record)  # the fixture itself must be a label today
    return json.dumps(record).encode() + b"\n"


def test_export_reports_bad_label_lines_and_exports_the_rest(tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, PAIRS)
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(
        label_line("p0")  # 1
        + b"\n"  # 2: blank
        + label_line("p1", preferred="b", margin=-0.5)  # 3
        + b'{"id": "p2", "note": "caf\xe9"}\n'  # 4: Latin-1, not UTF-8
        + b"{not json\n"  # 5
        + b'{"id": "p3"}\n'  # 6: JSON, not a label
        + label_line("p0", margin=9.0)  # 7: the same pair again
        + label_line("p2", preferred="tie", margin=0.0)  # 8
        + label_line("p4")[:-1]  # 9: a run killed before the line end
    )
    rows_path = tmp_path / "train.jsonl"
    result = run_cli("export", str(labels), "--pairs", str(pairs), "-o", str(rows_path),
                     cwd=tmp_path)  # fmt: skip

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    reported = {
        int(n): reason
        for n, reason in re.findall(rf"{re.escape(str(labels))}:(\d+): (.*)", result.stderr)
    }
    assert sorted(reported) == [2, 4, 5, 6, 7, 9]
    assert "blank" in reported[2]
    assert "not UTF-8" in reported[4]
    assert "not valid JSON" in reported[5]
    assert "not a label" in reported[6] and "preferred" in reported[6]
    assert "duplicate id 'p0'" in reported[7] and "line 1" in reported[7]
    assert "half-written" in reported[9]

    rows = read_labels(rows_path)
    # The first p0 wins, not the duplicate (its margin was 9).
    assert [(r["id"], r["margin"]) for r in rows] == [("p0", 1.5), ("p1", 0.5)]
    assert rows[1]["chosen"] == PAIRS[1]["response_b"]
    assert "exported 3 label(s): wrote 2 row(s)" in result.stderr
    assert "skipped 1 tie(s)" in result.stderr and "6 bad line(s)" in result.stderr


def test_export_of_a_clean_file_exits_0(tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, PAIRS[:2])
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(label_line("p0") + label_line("p1", preferred="tie"))
    rows_path = tmp_path / "train.jsonl"
    result = run_cli("export", str(labels), "--pairs", str(pairs), "-o", str(rows_path),
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in read_labels(rows_path)] == ["p0"]
    assert "0 bad line(s)" in result.stderr
