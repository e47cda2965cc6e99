"""Calibration profiles, pure: the fit, cross-validation, profiles, and applying them.

Synthetic margins stand in for the engine (seeded), so each test runs in milliseconds;
tests/test_calibration_e2e.py runs the real default model.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from cai_judge.cli.main import app
from cai_judge.evaluation.calibration_fit import (
    MIN_GOLD_PAIRS,
    CalibrationMetrics,
    CalibrationSample,
    FitResult,
    FitSpec,
    GoldInfo,
    LengthSample,
    build_report,
    calibration_samples,
    cross_validate,
    debiased_margins,
    estimate_length_sensitivity,
    fit_terms,
    pooled_length_sensitivity,
)
from cai_judge.evaluation.gold import GoldPair
from cai_judge.evaluation.protocols import PairScores
from cai_judge.evaluation.render import write_calibration_report
from cai_judge.evaluation.runner import JudgeRun, ScoredPair
from cai_judge.labeling.calibration_profile import (
    CalibrationError,
    CalibrationProfile,
    CalibrationTerms,
    FitRecord,
    LengthFitRecord,
    ProfileKey,
    ProfileMismatch,
    ProfileSet,
    calibrate_label,
    raw_label,
    read_profile,
)
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.label_math import (
    Aggregator,
    PrincipleBreakdown,
    preferred_from_margin,
    sigmoid,
)
from cai_judge.labeling.schema import ConstitutionRef, Label, TemplateRef, Usage

KEY = ProfileKey(
    model="judge-m",
    template=TemplateRef(id="cai-mc-v1", version="t" * 16),
    constitution=ConstitutionRef(id="harmless", version="c" * 64),
    aggregator=Aggregator.MEAN_LOGODDS,
    selection="all",
)
RECORD = FitRecord(
    gold_sha256="0" * 64,
    gold_pairs=100,
    folds=5,
    seed=0,
    ece_raw=0.2,
    ece_cross_validated=0.1,
    brier_raw=0.26,
    brier_cross_validated=0.24,
)

LENGTH_RECORD = LengthFitRecord(source="unlabeled", path="pairs.jsonl", sha256="1" * 64, pairs=500)


def profile(
    w: float = 0.5, length: float | None = None, key: ProfileKey = KEY
) -> CalibrationProfile:
    """A profile for labels of the one principle "a"; `length` is its β."""
    terms = CalibrationTerms(
        inverse_temperature=w, length_sensitivity=None if length is None else {"a": length}
    )
    return CalibrationProfile.create(key, terms, RECORD, None if length is None else LENGTH_RECORD)


def label(margin: float, **overrides: object) -> Label:
    fields: dict[str, object] = {
        "id": "p1",
        "preferred": preferred_from_margin(margin),
        "margin": margin,
        "p_a": sigmoid(margin),
        "position_bias": -0.3,
        "consistency": 1.0,
        "answer_mass": 0.9,
        "low_confidence": False,
        "principles": ["a"],
        "selection": KEY.selection,
        "aggregator": KEY.aggregator,
        "constitution": KEY.constitution,
        "template": KEY.template,
        "model": KEY.model,
        "seed": 0,
    }
    return Label.model_validate(fields | overrides)


def synthetic(
    n: int,
    seed: int,
    temperature: float = 2.0,
    length_bias: float = 0.0,
    soft: bool = False,
) -> list[CalibrationSample]:
    """A judge whose margin, minus `length_bias`·L, is `temperature` times gold's log-odds.

    Gold prefers neither the longer nor the shorter response; a length-biased judge adds
    length_bias·log(tokens_a/tokens_b) to its margin.
    """
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        true_logit = rng.gauss(0.0, 1.5)
        tokens_a, tokens_b = rng.randint(5, 400), rng.randint(5, 400)
        length = math.log(tokens_a) - math.log(tokens_b)
        p = sigmoid(true_logit)
        target = p if soft else float(rng.random() < p)
        samples.append(
            CalibrationSample(
                pair_id=f"s{i}",
                group=f"g{i}",
                margin=temperature * true_logit + length_bias * length,
                tokens_a=tokens_a,
                tokens_b=tokens_b,
                target=target,
                gold="a" if target >= 0.5 else "b",
            )
        )
    return samples


# -- the fit ---------------------------------------------------------------------------


def test_fit_recovers_a_known_temperature():
    # Soft targets drawn from a calibrated model: the optimum is T itself, up to the ridge.
    exact = fit_terms(synthetic(300, seed=1, temperature=2.5, soft=True), FitSpec())
    assert exact.terms.temperature == pytest.approx(2.5, rel=1e-3)
    # Hard 0/1 targets sampled from it: recovered within sampling noise.
    sampled = fit_terms(synthetic(4000, seed=2, temperature=2.5), FitSpec())
    assert sampled.terms.temperature == pytest.approx(2.5, rel=0.1)
    assert not sampled.direction_rejected
    # And an over-confident judge (T < 1) likewise.
    sharp = fit_terms(synthetic(4000, seed=3, temperature=0.4), FitSpec())
    assert sharp.terms.temperature == pytest.approx(0.4, rel=0.1)


def test_fit_recovers_the_judges_own_length_bias_then_the_temperature():
    samples = synthetic(4000, seed=4, temperature=2.0, length_bias=0.8, soft=True)
    found = fit_terms(samples, FitSpec(length_control=True)).terms
    # m = 2·t + 0.8·L with t independent of L: β is 0.8 up to sampling noise, and the
    # debiased margin 2·t + (0.8 − β)·L needs T ≈ 2.
    assert found.length_sensitivity is not None
    assert found.length_sensitivity["p"] == pytest.approx(0.8, abs=0.1)
    assert found.temperature == pytest.approx(2.0, rel=0.05)
    # A β given from elsewhere (--unlabeled) is used as is, never refitted on gold.
    fixed = fit_terms(samples, FitSpec(fixed_sensitivity={"p": 0.8})).terms
    assert fixed.length_sensitivity == {"p": 0.8}


def length_sample(
    pair_id: str, tokens: tuple[int, int], margins: dict[str, float], used: tuple[str, ...]
) -> LengthSample:
    return LengthSample(
        pair_id=pair_id,
        group=pair_id,
        margin=sum(margins[p] for p in used) / len(used),
        tokens_a=tokens[0],
        tokens_b=tokens[1],
        principles=used,
        principle_margins=tuple(margins.items()),
    )


# Hand-computed: L = ln 2, −ln 2, 2·ln 2 (tokens 20/10, 10/20, 40/10), so Σ L² = 6·ln²2.
# p1's margins 1.0, −0.5, 1.5: Σ m·L = (1 + 0.5 + 3)·ln 2, β1 = 4.5/(6·ln 2) = 0.75/ln 2.
# p2's margins 0.2, 0.2, 0.0: Σ m·L = 0, β2 = 0.
HAND = [
    length_sample("x1", (20, 10), {"p1": 1.0, "p2": 0.2}, ("p1", "p2")),
    length_sample("x2", (10, 20), {"p1": -0.5, "p2": 0.2}, ("p1", "p2")),
    length_sample("x3", (40, 10), {"p1": 1.5, "p2": 0.0}, ("p1",)),
]


def test_length_sensitivity_on_hand_computed_numbers():
    beta = estimate_length_sensitivity(HAND)
    assert list(beta) == ["p1", "p2"]
    assert beta["p1"] == pytest.approx(0.75 / math.log(2), rel=1e-12)
    assert beta["p2"] == pytest.approx(0.0, abs=1e-15)
    # Pooled over the labels' own margins 0.6, −0.15, 1.5: (0.6 + 0.15 + 3)/6 / ln 2.
    assert pooled_length_sensitivity(HAND) == pytest.approx(3.75 / 6 / math.log(2), rel=1e-12)
    # Debiased m − β̄_S·L: x1 and x2 used both principles (β̄ = 0.375/ln 2), x3 only p1.
    found = debiased_margins(HAND, beta)
    assert found[0] == pytest.approx(0.6 - 0.375, rel=1e-12)
    assert found[1] == pytest.approx(-0.15 + 0.375, rel=1e-12)
    assert found[2] == pytest.approx(1.5 - 0.75 * 2, abs=1e-12)
    # Applied at serve time: the same number from the label, through the profile.
    applied = CalibrationProfile.create(
        KEY, CalibrationTerms(inverse_temperature=2.0, length_sensitivity=beta), RECORD,
        LENGTH_RECORD,
    )  # fmt: skip
    served = calibrate_label(label(0.6, principles=["p1", "p2"]), applied, 20, 10)
    assert served.margin == 2.0 * float(found[0])


def test_length_sensitivity_needs_pairs_of_different_lengths():
    same = [length_sample("x", (10, 10), {"p1": 1.0}, ("p1",))]
    with pytest.raises(ValueError, match="same token count"):
        estimate_length_sensitivity(same)
    with pytest.raises(ValueError, match="no pairs"):
        estimate_length_sensitivity([])


def test_a_judge_that_points_away_from_gold_is_not_reversed_unless_allowed():
    samples = synthetic(500, seed=5, temperature=-1.5, soft=True)
    refused = fit_terms(samples, FitSpec())
    assert refused.direction_rejected
    assert refused.unconstrained_inverse_temperature < 0
    assert refused.terms.inverse_temperature == 0.0
    allowed = fit_terms(samples, FitSpec(allow_reversal=True))
    assert not allowed.direction_rejected and allowed.terms.reverses_judge
    assert allowed.terms.temperature == pytest.approx(-1.5, rel=1e-3)


def test_the_fit_stays_finite_on_separable_gold():
    samples = [
        CalibrationSample(f"s{i}", f"g{i}", m, 10, 20, float(m > 0), "a" if m > 0 else "b")
        for i, m in enumerate(np.linspace(-2, 2, 40))
    ]
    found = fit_terms(samples, FitSpec())
    assert math.isfinite(found.terms.inverse_temperature)
    assert found.terms.inverse_temperature > 5


# -- cross-validation ------------------------------------------------------------------


def test_cross_validation_never_scores_a_pair_it_was_fitted_on():
    samples = synthetic(60, seed=6)
    # Every third pair also appears swapped under another id: the same content.
    for i in range(0, 60, 3):
        s = samples[i]
        samples.append(
            CalibrationSample(
                f"{s.pair_id}-swapped", s.group, -s.margin, s.tokens_b, s.tokens_a,
                1 - s.target, "b" if s.gold == "a" else "a",
            )
        )  # fmt: skip
    fitted_on: list[set[str]] = []

    def spy(train, spec):
        fitted_on.append({s.pair_id for s in train})
        # Terms that say which fit made them: w = call number.
        return FitResult(CalibrationTerms(inverse_temperature=len(fitted_on)), 1.0, 0)

    result = cross_validate(samples, FitSpec(), folds=5, seed=0, fit=spy)
    assert len(fitted_on) == len(result.folds) == 5
    scored = [pid for fold in result.folds for pid in fold.test_ids]
    assert sorted(scored) == sorted(s.pair_id for s in samples)  # each scored exactly once
    for fold, trained in zip(result.folds, fitted_on, strict=True):
        assert trained == set(fold.train_ids)
        assert trained.isdisjoint(fold.test_ids)
        assert trained | set(fold.test_ids) == {s.pair_id for s in samples}
    fold_of = dict(zip((s.pair_id for s in samples), result.fold_of, strict=True))
    for i, s in enumerate(samples):
        # The score of a pair came from the fit of its own fold, never from one that saw it.
        assert result.logits[i] == (fold_of[s.pair_id] + 1) * s.margin
        if s.pair_id.endswith("-swapped"):
            assert fold_of[s.pair_id] == fold_of[s.pair_id.removesuffix("-swapped")]


def gold_run(prompts: list[object], pairs_per_prompt: list[int]) -> JudgeRun:
    """A judge run over gold pairs, `pairs_per_prompt[i]` of them (different responses)
    for prompt i; every principle scored, the numbers not under test."""
    spec = ConstitutionRegistry.with_builtins().resolve("harmless")
    scored = []
    for i, (prompt, count) in enumerate(zip(prompts, pairs_per_prompt, strict=True)):
        for j in range(count):
            gold = GoldPair.model_validate({
                "id": f"q{i}-{j}", "prompt": prompt, "response_a": f"Answer {j} to {i}.",
                "response_b": f"Another answer {j}.", "preferred": "a" if j % 2 else "b",
            })  # fmt: skip
            margin = 0.1 * (j + 1) * (1 if j % 2 else -1)
            breakdowns = tuple(
                PrincipleBreakdown(pid, margin, -margin, margin, 0.0, True, 0.9)
                for pid in spec.principle_ids
            )
            scored.append(ScoredPair(gold, PairScores(gold.id, breakdowns)))
    return JudgeRun("judge-m", spec, tuple(scored), (), Usage(), 0, 0.5)


def test_folds_keep_every_prompt_in_one_fold_and_stay_balanced():
    # 10 prompts with 2 to 9 pairs each, text and chat: pairs of one prompt share most of
    # what the judge reads, so a fold that saw some of them must not score the others.
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    prompts: list[object] = [f"Prompt number {i}?" for i in range(8)] + [chat, chat[1:]]
    sizes = [2, 9, 3, 5, 4, 6, 2, 7, 3, 5]
    run = gold_run(prompts, sizes)
    tokens = {scored.gold.id: (10, 12) for scored in run.scored}
    samples = calibration_samples(run, tokens)
    result = cross_validate(samples, FitSpec(), folds=5, seed=3)
    folds_of_prompt: dict[str, set[int]] = {}
    for scored, fold in zip(run.scored, result.fold_of, strict=True):
        folds_of_prompt.setdefault(json.dumps(scored.gold.prompt, default=str), set()).add(fold)
    assert len(folds_of_prompt) == 10
    assert all(len(folds) == 1 for folds in folds_of_prompt.values()), folds_of_prompt
    # Balanced as whole prompts allow: 46 pairs in 5 folds, no fold off by a large prompt.
    counts = [list(result.fold_of).count(k) for k in range(5)]
    assert min(counts) >= 1 and max(counts) - min(counts) <= max(sizes), counts


def test_a_chat_prompt_groups_by_its_messages():
    chat = [{"role": "user", "content": "Hi?"}]
    run = gold_run([chat, chat, json.dumps(chat), [{"role": "user", "content": "Hello?"}]],
                   [1, 1, 1, 1])  # fmt: skip
    groups = [s.group for s in calibration_samples(run, {s.gold.id: (1, 1) for s in run.scored})]
    # The same messages group together; a text prompt that spells their JSON does not.
    assert groups[0] == groups[1] and len({groups[0], groups[2], groups[3]}) == 3


def test_folds_refuse_more_folds_than_pairs():
    with pytest.raises(ValueError, match="folds must be from 2 to 3"):
        cross_validate(synthetic(3, seed=7), FitSpec(), folds=4)


# -- the report ------------------------------------------------------------------------

GOLD_INFO = GoldInfo(path="gold.jsonl", sha256="0" * 64, pairs=120, scored=120, errors=[])


def make_profile(
    spec: FitSpec,
) -> object:
    def make(fit: FitResult, raw: CalibrationMetrics, cross: CalibrationMetrics):
        record = LENGTH_RECORD if fit.terms.length_sensitivity is not None else None
        return CalibrationProfile.create(KEY, fit.terms, RECORD, record)

    return make


def test_length_control_brings_prefers_longer_to_golds_own(tmp_path: Path):
    samples = synthetic(400, seed=8, temperature=1.0, length_bias=1.5)
    plain_spec, controlled_spec = FitSpec(), FitSpec(length_control=True)
    plain = build_report(samples, plain_spec, make_profile(plain_spec), GOLD_INFO, n_resamples=200)
    controlled = build_report(
        samples, controlled_spec, make_profile(controlled_spec), GOLD_INFO, n_resamples=200
    ).report
    gold_longer = controlled.gold_prefers_longer.prefers_longer
    assert gold_longer is not None
    raw_longer = controlled.raw.prefers_longer.prefers_longer
    assert raw_longer is not None and raw_longer - gold_longer > 0.15  # the judge's bias
    plain_longer = plain.report.cross_validated.prefers_longer.prefers_longer
    assert plain_longer is not None and plain_longer - gold_longer > 0.15  # T cannot fix it
    cv_longer = controlled.cross_validated.prefers_longer.prefers_longer
    assert cv_longer is not None and abs(cv_longer - gold_longer) < 0.10
    assert controlled.cross_validated.brier < controlled.raw.brier
    assert controlled.cross_validated_temperature_only is not None
    assert controlled.profile.terms.length_sensitivity is not None
    assert controlled.profile.terms.length_sensitivity["p"] == pytest.approx(1.5, abs=0.3)
    rows = {r.name: r for r in controlled.length_rows}
    assert list(rows) == ["gold", "raw", "debiased", "calibrated"]
    assert rows["gold"].prefers_longer.prefers_longer == gold_longer
    debiased_longer = rows["debiased"].prefers_longer.prefers_longer
    assert debiased_longer is not None and abs(debiased_longer - gold_longer) < 0.10
    assert rows["gold"].prefers_longer_when_shorter_wins.prefers_longer == 0.0
    assert rows["gold"].agreement_shorter_wins == rows["gold"].agreement_longer_wins == 1.0
    raw_short, debiased_short = (
        rows["raw"].agreement_shorter_wins, rows["debiased"].agreement_shorter_wins,
    )  # fmt: skip
    assert raw_short is not None and debiased_short is not None
    assert debiased_short > raw_short + 0.15  # the half a length-biased judge gets wrong

    json_path, html_path = write_calibration_report(controlled, tmp_path / "report")
    data = json.loads(json_path.read_text())
    assert data["length"]["source"] == "gold" and set(data["length"]["sensitivity"]) == {"p"}
    for block in ("raw", "debiased", "cross_validated", "cross_validated_temperature_only",
                  "in_sample"):  # fmt: skip
        assert {"ece", "brier", "log_loss", "agreement", "prefers_longer", "reliability"} <= set(
            data[block]
        )
    assert len(data["pairs"]) == 400 and len(data["fold_terms"]) == 5
    assert {"value", "low", "high", "n"} <= set(data["brier_gain"])
    html = html_path.read_text()
    assert html.count("data:image/png;base64,") == 3  # reliability, length, β per principle
    assert controlled.profile.hash in html


def test_length_control_does_not_imitate_golds_length_preference():
    """Gold mildly prefers the longer response and the judge's margin is mostly
    length. A length term fitted to gold and kept made the labels prefer the longer response
    *more* than raw; removing the judge's own β must not push past gold's preference."""
    rng = random.Random(11)
    samples = []
    for i in range(600):
        tokens_a, tokens_b = rng.randint(5, 400), rng.randint(5, 400)
        length = math.log(tokens_a) - math.log(tokens_b)
        truth = rng.gauss(0.0, 1.5) + 0.3 * length  # gold leans to the longer response
        target = float(rng.random() < sigmoid(truth))
        # A weak judge that mostly scores length: its margin carries little of gold's signal.
        margin = 0.1 * truth + 1.5 * length + rng.gauss(0.0, 0.3)
        gold = "a" if target == 1.0 else "b"
        samples.append(
            CalibrationSample(f"s{i}", f"g{i}", margin, tokens_a, tokens_b, target, gold)
        )
    spec = FitSpec(length_control=True)
    report = build_report(samples, spec, make_profile(spec), GOLD_INFO, n_resamples=200).report
    rows = {r.name: r for r in report.length_rows}
    gold_longer = rows["gold"].prefers_longer.prefers_longer
    raw_longer = rows["raw"].prefers_longer.prefers_longer
    calibrated_longer = rows["calibrated"].prefers_longer.prefers_longer
    assert gold_longer is not None and raw_longer is not None and calibrated_longer is not None
    assert raw_longer > gold_longer + 0.2
    # Schema 1's form, σ(w·m + λ·L) fitted to gold and kept, picks the longer response in
    # 65.8% of these pairs (gold 55.2%): it learns gold's lean and leans harder.
    assert calibrated_longer <= gold_longer + 0.02
    assert abs(calibrated_longer - gold_longer) < 0.10


def test_report_warns_when_cross_validated_ece_does_not_improve():
    # A judge that is already calibrated: raw ECE is 0, so nothing can improve on it.
    samples = [
        CalibrationSample(f"s{i}", f"g{i}", m, 10, 10, sigmoid(m), "a" if m >= 0 else "b")
        for i, m in enumerate(np.linspace(-3, 3, 50))
    ]
    report = build_report(samples, FitSpec(), make_profile(FitSpec()), GOLD_INFO).report
    assert report.raw.ece == pytest.approx(0.0, abs=1e-12)
    assert any("cross-validated ECE does not improve" in w for w in report.warnings)


def test_report_refuses_too_few_pairs():
    with pytest.raises(ValueError, match=f"at least {MIN_GOLD_PAIRS}"):
        build_report(synthetic(29, seed=9), FitSpec(), make_profile(FitSpec()), GOLD_INFO)


def test_cli_refuses_a_gold_set_under_30_pairs_before_starting_the_engine(tmp_path: Path):
    gold = tmp_path / "gold.jsonl"
    rows = [
        {"id": f"g{i}", "prompt": "Hi?", "response_a": f"Hello {i}!", "response_b": "No.",
         "preferred": "a"}
        for i in range(29)
    ]  # fmt: skip
    gold.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(
        app, ["calibrate", str(gold), "-o", str(tmp_path / "p.json"), "--model", "/nonexistent"]
    )
    assert result.exit_code == 2, result.output
    assert "holds 29 pair(s); a calibration needs at least 30" in result.stderr
    assert not (tmp_path / "p.json").exists()


def test_cli_needs_gold_or_unlabeled_pairs_and_refuses_a_bad_unlabeled_file(tmp_path: Path):
    out = ["-o", str(tmp_path / "p.json"), "--model", "/nonexistent"]
    neither = CliRunner().invoke(app, ["calibrate", *out])
    assert neither.exit_code == 2, neither.output
    assert "give a gold set (GOLD.jsonl), --unlabeled PAIRS.jsonl" in neither.stderr
    pairs = tmp_path / "pairs.jsonl"
    good = {"id": "u1", "prompt": "Hi?", "response_a": "Hello!", "response_b": "No."}
    pairs.write_text(json.dumps(good) + "\n" + json.dumps(good | {"response_b": None}) + "\n")
    bad = CliRunner().invoke(app, ["calibrate", "--unlabeled", str(pairs), *out])
    assert bad.exit_code == 2, bad.output
    assert f"problem(s) in --unlabeled {pairs}" in bad.stderr and "pairs.jsonl:2:" in bad.stderr
    assert not (tmp_path / "p.json").exists()


# -- profiles --------------------------------------------------------------------------


def test_profile_hash_names_its_content_and_an_edited_file_is_refused(tmp_path: Path):
    first = profile(0.5)
    assert first.hash == profile(0.5).hash != profile(0.6).hash
    path = tmp_path / "p.json"
    path.write_text(first.to_json())
    assert read_profile(path) == first
    data = json.loads(path.read_text())
    data["terms"]["inverse_temperature"] = 5.0
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="edited after it was fitted"):
        read_profile(path)
    path.write_text("{}")
    with pytest.raises(CalibrationError, match="not a valid calibration profile"):
        read_profile(path)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("model", "another-model", "the judge model"),
        ("template", TemplateRef(id="cai-mc-v1", version="u" * 16), "judge template version"),
        ("constitution", ConstitutionRef(id="harmless", version="d" * 64), "constitution version"),
        ("aggregator", Aggregator.MEAN_PROB, "the aggregator"),
        ("selection", 4, "principle selection"),
    ],
)
def test_a_profile_for_other_labels_is_refused(field: str, value: object, words: str):
    other = label(0.3, **{field: value})
    with pytest.raises(ProfileMismatch, match=words) as caught:
        calibrate_label(other, profile())
    assert caught.value.fields == (field,)
    profiles = ProfileSet([(Path("a.json"), profile())])
    with pytest.raises(ProfileMismatch, match=f"closest, a.json .*{words}"):
        profiles.select(KEY.model_copy(update={field: value}))
    assert profiles.select(KEY) == profile()


def test_profile_folder_loads_once_and_refuses_two_profiles_for_one_key(tmp_path: Path):
    (tmp_path / "one.json").write_text(profile(0.5).to_json())
    assert len(ProfileSet.from_dir(tmp_path)) == 1
    (tmp_path / "two.json").write_text(profile(0.7).to_json())
    with pytest.raises(CalibrationError, match=r"one\.json and .*two\.json are both profiles"):
        ProfileSet.from_dir(tmp_path)
    with pytest.raises(CalibrationError, match="does not exist"):
        ProfileSet.from_dir(tmp_path / "missing")


def test_calibrated_label_keeps_its_raw_numbers_and_is_never_calibrated_twice():
    raw = label(0.8)
    found = calibrate_label(raw, profile(2.0))
    assert found.margin == 1.6 and found.p_a == sigmoid(1.6)
    assert found.calibration is not None
    assert (found.calibration.raw_margin, found.calibration.raw_p_a) == (0.8, raw.p_a)
    assert found.calibration.profile == profile(2.0).hash
    again = calibrate_label(found, profile(3.0))
    assert again.margin == pytest.approx(2.4)
    assert again.calibration is not None and again.calibration.raw_margin == 0.8
    assert raw_label(again) == raw
    with pytest.raises(CalibrationError, match="token counts"):
        calibrate_label(raw, profile(1.0, length=0.5))
    # Debiasing can turn the verdict: a long-winded a loses the lead its length bought it.
    turned = calibrate_label(raw, profile(1.0, length=0.5), 400, 50)
    assert turned.margin == 0.8 - 0.5 * (math.log(400) - math.log(50))
    assert turned.preferred == "b" and turned.p_a < 0.5


def test_profile_round_trip_records_the_length_set_and_refuses_old_or_torn_profiles(
    tmp_path: Path,
):
    debiased = profile(0.5, length=0.25)
    assert debiased.length_control and debiased.length_fitted_on == LENGTH_RECORD
    assert debiased.hash != profile(0.5, length=0.26).hash != profile(0.5).hash
    path = tmp_path / "p.json"
    path.write_text(debiased.to_json())
    assert read_profile(path) == debiased
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2 and data["terms"]["length_sensitivity"] == {"a": 0.25}
    assert data["length_fitted_on"]["sha256"] == "1" * 64
    # The set's record is part of the hashed content.
    data["length_fitted_on"]["pairs"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="edited after it was fitted"):
        read_profile(path)
    # A schema 1 profile (its gold-fitted λ was length imitation) is refused, saying why.
    old = {"format": "cai-judge-calibration-profile", "schema_version": 1, "key": {},
           "length_control": True, "terms": {"inverse_temperature": 0.5, "length_weight": 0.2},
           "fitted_on": {}, "hash": "0" * 64}  # fmt: skip
    path.write_text(json.dumps(old))
    with pytest.raises(CalibrationError, match=r"schema 1 profile.*Refit it with `cai-judge"):
        read_profile(path)
    # β without the record of its set, or the record without β, is not a profile.
    with pytest.raises(ValueError, match="set together"):
        CalibrationProfile.create(KEY, CalibrationTerms(inverse_temperature=1.0), None,
                                  LENGTH_RECORD)  # fmt: skip
    # No gold, no temperature.
    with pytest.raises(ValueError, match="no gold must have inverse_temperature 1"):
        CalibrationProfile.create(
            KEY, CalibrationTerms(inverse_temperature=0.5, length_sensitivity={"a": 0.1}),
            None, LENGTH_RECORD,
        )  # fmt: skip
    length_only = CalibrationProfile.create(
        KEY, CalibrationTerms(inverse_temperature=1.0, length_sensitivity={"a": 0.1}), None,
        LENGTH_RECORD,
    )  # fmt: skip
    assert length_only.fitted_on is None and length_only.terms.temperature == 1.0


finite = st.floats(min_value=-50, max_value=50, allow_nan=False, allow_infinity=False)
tokens = st.integers(min_value=1, max_value=100_000)


@given(
    margin=finite,
    w=finite,
    betas=st.lists(finite, min_size=1, max_size=6),
    tokens_a=tokens,
    tokens_b=tokens,
    data=st.data(),
)
def test_antisymmetry_holds_exactly_after_calibration(
    margin: float,
    w: float,
    betas: list[float],
    tokens_a: int,
    tokens_b: int,
    data: st.DataObject,
):
    ids = [f"p{i}" for i in range(len(betas))]
    used = data.draw(st.lists(st.sampled_from(ids), min_size=1, unique=True))
    used = [p for p in ids if p in used]  # a label lists its principles in constitution order
    applied = CalibrationProfile.create(
        KEY,
        CalibrationTerms(
            inverse_temperature=w, length_sensitivity=dict(zip(ids, betas, strict=True))
        ),
        RECORD,
        LENGTH_RECORD,
    )
    forward = calibrate_label(label(margin, principles=used), applied, tokens_a, tokens_b)
    # The swapped pair's label: the margin negated exactly, the same principles.
    swapped = calibrate_label(label(-margin, principles=used), applied, tokens_b, tokens_a)
    assert swapped.margin == -forward.margin
    assert swapped.p_a == 1 - forward.p_a
    assert {forward.preferred, swapped.preferred} in ({"a", "b"}, {"tie"})
    plain = profile(w)
    assert (
        calibrate_label(label(-margin), plain).margin
        == -calibrate_label(label(margin), plain).margin
    )
