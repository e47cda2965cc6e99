"""The CLI's and the SDK's resume compare one set of fields, formatted alike, and the CLI
refuses a CoT file made with another rationale budget. No engine: every run here is
refused before it would load a tokenizer or start one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cai_judge.cli.pairs_file import PROVENANCE_OPTIONS, provenance
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge_client._dataset import RESUME_FIELDS
from cai_judge_client._dataset import provenance as sdk_provenance
from tests.support.cli import PAIRS, run_cli, write_jsonl

MODEL = "some/judge-model"


def label(pair_id: str, **fields: Any) -> dict[str, Any]:
    """A label record as `cai-judge label` writes it (values not under test)."""
    harmless = ConstitutionRegistry.with_builtins().resolve("harmless")
    return {
        "id": pair_id, "preferred": "a", "margin": 0.8, "p_a": 0.69, "position_bias": 0.0,
        "consistency": 1.0, "answer_mass": 0.9, "low_confidence": False,
        "principles": ["less-harmful", "honest"], "selection": 2, "aggregator": "mean_logodds",
        "constitution": {"id": harmless.id, "version": harmless.version},
        "template": {"id": harmless.template, "version": "t1"}, "model": MODEL, "seed": 0,
        **fields,
    }  # fmt: skip


COT = {"mode": "cot", "raw_margin": 0.9, "raw_p_a": 0.71, "cot_max_probability": 0.95,
       "cot_max_tokens": 64, "rationales": []}  # fmt: skip


def test_the_cli_and_the_sdk_compare_the_same_fields_alike():
    assert set(PROVENANCE_OPTIONS) == set(RESUME_FIELDS)
    records = [
        label("p0"),
        label("p0", **COT),
        label(
            "p0",
            per_principle=[],
            calibration={"profile": "abc", "raw_margin": 0.1, "raw_p_a": 0.5},
        ),
        label("p0", ensemble={"mode": "adaptive", "delta": 0.1, "round": 2, "scored": 4}),
        {"id": "p0"},  # a file from before labels recorded their provenance
    ]
    for record in records:
        assert provenance(record) == sdk_provenance(record)
    assert len({tuple(sorted(provenance(r).items())) for r in records}) == len(records)


@pytest.mark.parametrize(
    ("file_fields", "flags", "expected"),
    [
        # A CoT run resumed with another rationale budget would mix labels.
        (COT, ["--mode", "cot", "--cot-max-tokens", "32"],
         "--cot-max-tokens: the file has 64 (line 1), this run has 32"),
        (COT, [], "--mode: the file has cot (line 1), this run has plain"),
        ({"per_principle": []}, [], "--per-principle: the file has on (line 1), this run has off"),
        ({"ensemble": {"mode": "adaptive", "delta": 0.1}}, [],
         "--ensemble / --ensemble-delta: the file has adaptive δ=0.1 (line 1), this run has full"),
        ({}, ["--ensemble", "adaptive", "--ensemble-delta", "0.2"],
         "--ensemble / --ensemble-delta: the file has full (line 1), this run has adaptive δ=0.2"),
    ],
)  # fmt: skip
def test_resume_with_other_cot_or_shape_settings_is_refused(
    tmp_path: Path, file_fields: dict[str, Any], flags: list[str], expected: str
):
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:3])
    output = tmp_path / "labels.jsonl"
    write_jsonl(output, [label("p0", **file_fields)])
    before = output.read_bytes()
    result = run_cli(
        "label", str(tmp_path / "pairs.jsonl"), "-o", str(output), "--model", MODEL,
        "--principles", "2", *flags, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "holds labels made with other settings" in result.stderr
    assert expected in " ".join(result.stderr.split()), result.stderr[-3000:]
    assert output.read_bytes() == before
