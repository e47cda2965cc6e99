"""Adaptive ensembles on the real engine (issue 31's "done when"): `cai-judge label
--ensemble adaptive` and `/v1/labels` with `ensemble: adaptive` label the examples with
fewer score units than `full`, their provenance says how many, and the labels do not
depend on the batch shape. The tiny model; one CLI engine start and the session's
`tiny_engine` for the rest."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cai_judge.api.app import create_app
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import LabelOptions, Pair
from cai_judge.settings import Settings
from tests.support.cli import read_labels, run_cli, write_jsonl
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.engine

EXAMPLES = [
    json.loads(line) for line in (REPO_ROOT / "examples" / "pairs.jsonl").read_text().splitlines()
][:6]
FULL_UNITS = 6 * 16 * 2  # harmless: 16 principles, both orders


def test_the_cli_labels_the_examples_with_fewer_units(tmp_path: Path, tiny_model_dir: Path):
    write_jsonl(tmp_path / "pairs.jsonl", EXAMPLES)
    result = run_cli(
        "label", str(tmp_path / "pairs.jsonl"), "-o", str(tmp_path / "labels.jsonl"),
        "--model", str(tiny_model_dir), "--ensemble", "adaptive", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    labels = read_labels(tmp_path / "labels.jsonl")
    assert len(labels) == len(EXAMPLES)
    units = 0
    for label in labels:
        info = label["ensemble"]
        assert isinstance(info, dict) and info["rule"] == "wor-betting"
        assert info["scored"] == len(label["principles"])  # type: ignore[arg-type]
        units += info["score_units"]
    print(f"CLI: {units} score units against {FULL_UNITS} for the full ensemble")
    assert units < FULL_UNITS


async def test_v1_labels_adaptive_scores_fewer_units_whatever_the_batch(
    tiny_engine: VllmEngine,
):
    app = create_app(
        Settings(max_model_len=1024), engine=tiny_engine,
        registry=ConstitutionRegistry.with_builtins(),
    )  # fmt: skip
    body = {"constitution": "harmless", "pairs": EXAMPLES}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            full = (await http.post("/v1/labels", json=body)).json()
            response = await http.post("/v1/labels", json={**body, "ensemble": "adaptive"})
    assert response.status_code == 200, response.text
    adaptive = response.json()
    print(f"HTTP: {adaptive['usage']['score_units']} score units against "
          f"{full['usage']['score_units']}")  # fmt: skip
    assert adaptive["usage"]["score_units"] < full["usage"]["score_units"] == FULL_UNITS
    for label in adaptive["labels"]:
        assert label["ensemble"]["scored"] == len(label["principles"])
    # One pair at a time labels alike (to DESIGN.md §2's 1e-4), on the same principles.
    judge = Judge(tiny_engine, ConstitutionRegistry.with_builtins())
    try:
        options = LabelOptions(ensemble="adaptive")
        for row, together in zip(EXAMPLES[:3], adaptive["labels"], strict=False):
            alone = (await judge.label([Pair(**row)], "harmless", options)).labels[0]
            assert alone.principles == together["principles"]
            assert alone.margin == pytest.approx(together["margin"], abs=1e-4)
    finally:
        judge.close()
