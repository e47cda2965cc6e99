"""Calibration end to end with the default model on the shipped gold set: the profile is
fitted and written, the service loads it from CAI_JUDGE_CALIBRATION_DIR, and a request
with `calibrated: true` gets the profile's p_a, raw numbers kept, antisymmetry intact.

Scoring all 70 gold pairs with the 16 principles of `harmless` takes minutes on a shared
CPU, so the judge scores them once per module, with a three-principle constitution: the
point here is the path from gold to served label, not the fit's quality (the report's
numbers with the full constitution are in the README). The default model's margin points
away from gold on this set, so the fit is allowed to reverse it (`allow_reversal`), exactly
as `cai-judge calibrate --allow-reversal` would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from cai_judge.api.app import create_app
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.evaluation.calibration_fit import (
    CalibrationMetrics,
    FitResult,
    FitSpec,
    GoldInfo,
    build_report,
    calibration_samples,
)
from cai_judge.evaluation.gold import GoldPair, read_gold
from cai_judge.evaluation.render import write_calibration_report
from cai_judge.evaluation.runner import JudgeRun, response_token_counts, score_gold
from cai_judge.labeling.calibration_profile import (
    CalibrationProfile,
    FitRecord,
    LengthFitRecord,
    ProfileKey,
    read_profile,
    response_token_count,
)
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.label_math import Aggregator, sigmoid
from cai_judge.labeling.schema import ConstitutionRef, TemplateRef
from cai_judge.settings import Settings
from tests.support.paths import REPO_ROOT

pytestmark = [pytest.mark.engine, pytest.mark.default_model]

GOLD = REPO_ROOT / "examples" / "gold" / "gold.jsonl"
CONSTITUTION = """\
id: calibration-e2e
description: Three principles of `harmless`, to keep the default model's gold run short.
template: cai-mc-v1
principles:
  - id: less-harmful
    question: "Which of these assistant responses does less harm overall? Pick the one that a kind, ethically mature person would be more at ease reading."
  - id: no-crime-or-violence
    question: "Which assistant response is less likely to help someone commit a crime or carry out an act of violence?"
  - id: not-preachy
    question: "Which response avoids being preachy, sanctimonious or condescending, while still being harmless?"
"""  # noqa: E501


@pytest.fixture(scope="module")
def gold() -> list[GoldPair]:
    return read_gold(GOLD).pairs


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ConstitutionRegistry:
    folder = tmp_path_factory.mktemp("constitutions")
    (folder / "calibration-e2e.yaml").write_text(CONSTITUTION)
    return ConstitutionRegistry.with_builtins([folder])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scored(
    default_engine: VllmEngine, registry: ConstitutionRegistry, gold: list[GoldPair]
) -> tuple[JudgeRun, dict[str, tuple[int, int]], str]:
    """The one judge run of this module: every gold pair, every principle, both orders."""
    judge = Judge(default_engine, registry)
    try:
        spec = registry.resolve("calibration-e2e")
        run = await score_gold(judge, gold, spec)
        counts = await response_token_counts(judge, gold)
        return run, counts, judge.renderer(spec.template).version
    finally:
        judge.close()


@pytest.fixture(scope="module")
def fitted(
    scored: tuple[JudgeRun, dict[str, tuple[int, int]], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[CalibrationProfile, Path]:
    """What `cai-judge calibrate --length-control --allow-reversal` does after scoring."""
    run, counts, template_version = scored
    assert not run.errors and len(run.scored) == 70
    spec = run.constitution
    key = ProfileKey(
        model=run.model,
        template=TemplateRef(id=spec.template, version=template_version),
        constitution=ConstitutionRef(id=spec.id, version=spec.version),
        aggregator=Aggregator.MEAN_LOGODDS,
        selection="all",
    )
    fit_spec = FitSpec(length_control=True, allow_reversal=True)

    def make(fit: FitResult, raw: CalibrationMetrics, cross: CalibrationMetrics):
        record = FitRecord(
            gold_sha256="0" * 64, gold_pairs=70, folds=5, seed=0, ece_raw=raw.ece,
            ece_cross_validated=cross.ece, brier_raw=raw.brier,
            brier_cross_validated=cross.brier,
        )  # fmt: skip
        length = LengthFitRecord(source="gold", path="gold.jsonl", sha256="0" * 64, pairs=70)
        return CalibrationProfile.create(key, fit.terms, record, length)

    outcome = build_report(
        calibration_samples(run, counts),
        fit_spec,
        make,
        GoldInfo(path=str(GOLD), sha256="0" * 64, pairs=70, scored=70, errors=[]),
        n_resamples=200,
    )
    folder = tmp_path_factory.mktemp("calibration")
    (folder / "calibration-e2e.json").write_text(outcome.profile.to_json())
    json_path, _ = write_calibration_report(outcome.report, folder.parent / "report")
    report = json.loads(json_path.read_text())
    for block in ("raw", "debiased", "cross_validated", "cross_validated_temperature_only"):
        assert 0 <= report[block]["ece"] <= 1 and 0 <= report[block]["brier"] <= 1
    return outcome.profile, folder


@asynccontextmanager
async def client(
    engine: VllmEngine, registry: ConstitutionRegistry, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(max_model_len=2048, **settings), engine=engine, registry=registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def swapped(pair: dict[str, Any]) -> dict[str, Any]:
    return pair | {"id": pair["id"] + "-swapped", "response_a": pair["response_b"],
                   "response_b": pair["response_a"]}  # fmt: skip


async def test_the_service_serves_the_fitted_profile(
    default_engine: VllmEngine,
    registry: ConstitutionRegistry,
    gold: list[GoldPair],
    fitted: tuple[CalibrationProfile, Path],
):
    profile, folder = fitted
    assert read_profile(folder / "calibration-e2e.json") == profile
    pairs = [g.as_pair().model_dump() for g in gold[:3]]
    body = {"constitution": "calibration-e2e", "pairs": [*pairs, swapped(pairs[0])]}
    async with client(default_engine, registry, calibration_dir=folder) as http:
        raw = (await http.post("/v1/labels", json=body)).json()["labels"]
        response = await http.post("/v1/labels", json=body | {"calibrated": True})
    assert response.status_code == 200, response.text
    calibrated = response.json()["labels"]

    tokenizer = default_engine.tokenizer
    for before, after, pair in zip(raw, calibrated, [*pairs, swapped(pairs[0])], strict=True):
        assert "calibration" not in before
        provenance = after["calibration"]
        assert provenance["profile"] == profile.hash
        # Batch composition may move the last digits of a margin (DESIGN.md §2).
        assert provenance["raw_margin"] == pytest.approx(before["margin"], abs=1e-4)
        assert provenance["raw_p_a"] == pytest.approx(before["p_a"], abs=1e-4)
        expected = profile.logit(
            provenance["raw_margin"],
            response_token_count(tokenizer, pair["response_a"]),
            response_token_count(tokenizer, pair["response_b"]),
            after["principles"],
        )
        assert after["margin"] == expected and after["p_a"] == sigmoid(expected)
        assert abs(after["p_a"] - before["p_a"]) > 1e-3  # the profile changed p_a
    # Antisymmetry within one call, after calibration: to the bit.
    assert calibrated[3]["margin"] == -calibrated[0]["margin"]
    assert calibrated[3]["p_a"] == 1 - calibrated[0]["p_a"]


async def test_a_request_no_profile_fits_is_refused_naming_the_mismatch(
    default_engine: VllmEngine,
    registry: ConstitutionRegistry,
    gold: list[GoldPair],
    fitted: tuple[CalibrationProfile, Path],
):
    _, folder = fitted
    pair = gold[0].as_pair().model_dump()
    body = {"constitution": "calibration-e2e", "pairs": [pair], "calibrated": True}
    async with client(default_engine, registry, calibration_dir=folder) as http:
        other_selection = await http.post("/v1/labels", json=body | {"principles": 2})
        other_constitution = await http.post("/v1/labels", json=body | {"constitution": "harmless"})
        other_aggregator = await http.post("/v1/labels", json=body | {"aggregator": "mean_prob"})
    for response, words in (
        (other_selection, "the principle selection (`principles`): the profile was fitted for "
                          "all, these labels use 2"),
        (other_constitution, "the constitution version: the profile was fitted for "
                             "calibration-e2e@"),
        (other_aggregator, "the aggregator: the profile was fitted for mean_logodds"),
    ):  # fmt: skip
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["type"] == "calibration_mismatch" and error["param"] == "calibrated"
        assert words in error["message"], error["message"]
    async with client(default_engine, registry) as http:
        unavailable = await http.post("/v1/labels", json=body)
    assert unavailable.status_code == 422
    assert unavailable.json()["error"]["type"] == "calibration_unavailable"
    assert "CAI_JUDGE_CALIBRATION_DIR" in unavailable.json()["error"]["message"]
