"""Option values the label options refuse are usage errors naming the limit (exit 2), not
tracebacks. No engine: each run stops before it would start one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cai_judge.constants import MAX_PRINCIPLES, MAX_SEED
from tests.support.cli import PAIRS, run_cli, write_jsonl


def unboxed(text: str) -> str:
    """stderr without rich's error-panel borders and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--principles", str(MAX_PRINCIPLES + 1)], f"at most {MAX_PRINCIPLES}"),
        (["--principles", "0"], "at least 1"),
        (["--principles", "some"], f"from 1 to {MAX_PRINCIPLES}"),
        (["--seed", str(MAX_SEED + 1)], str(MAX_SEED)),
    ],
)
def test_label_option_out_of_range_is_a_usage_error(
    tmp_path: Path, flags: list[str], expected: str
):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, PAIRS[:1])
    result = run_cli("label", str(pairs), "-o", str(tmp_path / "o.jsonl"), *flags, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Invalid value for '{flags[0]}'" in unboxed(result.stderr)
    assert expected in unboxed(result.stderr)
    assert not (tmp_path / "o.jsonl").exists()


def test_label_option_from_the_environment_is_named(tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, PAIRS[:1])
    result = run_cli(
        "label", str(pairs), "-o", str(tmp_path / "o.jsonl"), cwd=tmp_path,
        env={"CAI_JUDGE_LOW_MASS_THRESHOLD": "3"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "CAI_JUDGE_LOW_MASS_THRESHOLD" in result.stderr and "at most 1" in result.stderr


def test_eval_seed_over_the_label_limit_is_a_usage_error(tmp_path: Path):
    gold = tmp_path / "gold.jsonl"
    write_jsonl(gold, [{**PAIRS[0], "preferred": "a"}])
    result = run_cli(
        "eval", str(gold), "-o", str(tmp_path / "out"), "--seed", str(MAX_SEED + 1), cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and str(MAX_SEED) in unboxed(result.stderr)
