"""`cai-judge probe`'s refusals, before any engine starts: each names what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import PAIRS, run_cli, write_jsonl


def test_a_bad_line_is_named_and_nothing_is_probed(tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps(PAIRS[0]) + "\n" + json.dumps({**PAIRS[1], "response_a": ""}) + "\n"
    )
    found = run_cli("probe", str(pairs), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert found.returncode == 2
    assert f"{pairs}:2: response_a" in found.stderr and "nothing was probed" in found.stderr
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, PAIRS[:2])
    taken = tmp_path / "taken"
    taken.write_text("x")
    found = run_cli("probe", str(pairs), "-o", str(taken), cwd=tmp_path)
    assert found.returncode == 2 and "is not a folder" in found.stderr


def test_label_options_are_checked_as_label_checks_them(tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, PAIRS[:2])
    out = ["-o", str(tmp_path / "out")]
    bad_principles = run_cli("probe", str(pairs), *out, "--principles", "0", cwd=tmp_path)
    assert bad_principles.returncode == 2 and "--principles" in bad_principles.stderr
    bad_probe = run_cli("probe", str(pairs), *out, "--probe", "flattery", cwd=tmp_path)
    assert bad_probe.returncode == 2 and "--probe" in bad_probe.stderr
    bad_mode = run_cli("probe", str(pairs), *out, "--mode", "fast", cwd=tmp_path)
    assert bad_mode.returncode == 2 and "--mode" in bad_mode.stderr
