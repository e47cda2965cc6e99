"""Adaptive ensembles in the Judge (labeling/judge.py, issue 31), on the fake engine: the
rounds, what the label says it did, determinism across batch shapes, antisymmetry, the
prefix cache in later rounds, and `ensemble: full` unchanged to the bit."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from cai_judge.engine.base import ScoreUnit
from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
from cai_judge.labeling.ensemble import DEFAULT_DELTA, RULE, round_sizes
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.label_math import draw_order, select_principles, selection_seed
from cai_judge.labeling.options import LabelOptions
from cai_judge.labeling.schema import Label, Pair
from tests.support.agreeing import preferring
from tests.support.api import pair
from tests.support.fake_engine import FakeEngine

# Sixteen principles, written here so the golden digest below does not move when the
# built-in constitutions change.
SPEC = ConstitutionSpec(
    id="sixteen",
    principles=tuple(
        {"id": f"p{i:02d}", "question": f"Which response is better by criterion {i}?"}
        for i in range(16)
    ),
)


def pairs(count: int, first: int = 0) -> list[Pair]:
    return [Pair(**pair(i)) for i in range(first, first + count)]


def judge(agreeing: bool = True) -> tuple[Judge, FakeEngine]:
    engine = FakeEngine(max_model_len=1024)
    if agreeing:
        engine.logprobs = preferring(engine.tokenizer)
    return Judge(engine, ConstitutionRegistry.with_builtins()), engine


ADAPTIVE = LabelOptions(ensemble="adaptive", per_principle=True)


async def test_agreeing_principles_stop_early_and_the_label_says_where() -> None:
    planner, _ = judge()
    full = await planner.label(pairs(12), SPEC, LabelOptions())
    adaptive = await planner.label(pairs(12), SPEC, ADAPTIVE)
    assert full.usage.score_units == 12 * 32
    assert adaptive.usage.score_units <= 0.6 * full.usage.score_units
    for label, reference in zip(adaptive.labels, full.labels, strict=True):
        info = label.ensemble
        assert info is not None and info.rule == RULE and info.delta == DEFAULT_DELTA
        assert info.selected == 16 and info.scored == len(label.principles) < 16
        assert info.score_units == 2 * info.scored
        assert info.scored == sum(round_sizes(16)[: info.round])
        assert info.decided == label.preferred == reference.preferred
        # The scored principles are the first of the seeded draw, listed in constitution
        # order, and the §2 numbers are over them alone.
        assert set(label.principles) <= set(SPEC.principle_ids)
        assert [p.principle for p in label.per_principle or []] == label.principles
        assert label.margin == pytest.approx(
            sum(p.margin for p in label.per_principle or []) / info.scored
        )
    assert sum(label.ensemble.score_units for label in adaptive.labels if label.ensemble) == (
        adaptive.usage.score_units
    )
    assert reference.ensemble is None  # `full` labels carry no ensemble provenance
    planner.close()


async def test_the_scored_principles_are_the_seeded_draws_first() -> None:
    planner, _ = judge()
    batch = pairs(4)
    labels = (await planner.label(batch, SPEC, ADAPTIVE.model_copy(update={"seed": 5}))).labels
    for p, label in zip(batch, labels, strict=True):
        seed = selection_seed(p.prompt_key(), p.response_a, p.response_b, SPEC.version, 5)
        drawn = draw_order(SPEC.principle_ids, None, seed)[: len(label.principles)]
        assert sorted(drawn) == label.principles
    planner.close()


def test_the_draw_order_selects_what_principle_sampling_selects() -> None:
    ids = [f"p{i}" for i in range(16)]
    for seed in range(50):
        for k in (None, 1, 8, 15, 16, 40):
            assert sorted(draw_order(ids, k, seed)) == sorted(select_principles(ids, k, seed))


async def test_labels_do_not_depend_on_the_batch_shape() -> None:
    planner, _ = judge()
    batch = pairs(9)
    together = (await planner.label(batch, SPEC, ADAPTIVE)).results
    alone = [(await planner.label([p], SPEC, ADAPTIVE)).results[0] for p in batch]
    threes = [
        r
        for i in range(0, 9, 3)
        for r in (await planner.label(batch[i : i + 3], SPEC, ADAPTIVE)).results
    ]
    assert together == alone == threes
    planner.close()


async def test_a_swapped_pair_stops_alike_with_the_opposite_label_to_the_bit() -> None:
    planner, _ = judge()
    batch = pairs(5)
    swapped = [
        p.model_copy(update={"response_a": p.response_b, "response_b": p.response_a}) for p in batch
    ]
    labels = (await planner.label(batch + swapped, SPEC, ADAPTIVE)).labels
    for mine, theirs in zip(labels[:5], labels[5:], strict=True):
        assert theirs.principles == mine.principles
        assert theirs.margin == -mine.margin and theirs.p_a == 1 - mine.p_a
        assert mine.ensemble and theirs.ensemble
        assert theirs.ensemble.round == mine.ensemble.round
    planner.close()


async def test_an_ensemble_that_never_stops_is_the_full_label() -> None:
    # The fake engine's default numbers are noise: principles split, so nothing stops
    # before the last round and the label must be the full one, to the bit.
    planner, _ = judge(agreeing=False)
    batch = pairs(6)
    options = LabelOptions(principles=6, per_principle=True)
    full = (await planner.label(batch, SPEC, options)).labels
    tight = options.model_copy(update={"ensemble": "adaptive", "ensemble_delta": 1e-6})
    adaptive = (await planner.label(batch, SPEC, tight)).labels
    for a, f in zip(adaptive, full, strict=True):
        assert a.ensemble is not None and a.ensemble.scored == 6 and a.ensemble.decided is None
        assert a.model_copy(update={"ensemble": None}) == f
    planner.close()


async def test_later_rounds_find_the_pairs_prefixes_cached() -> None:
    planner, _ = judge()
    batch = await planner.label(pairs(8), SPEC, ADAPTIVE)
    assert len(batch.rounds) >= 2
    later = batch.rounds[1:]
    share = sum(r.cached_prompt_tokens for r in later) / sum(r.prompt_tokens for r in later)
    first = batch.rounds[0]
    print(f"cached share: round 1 {first.cached_prompt_tokens / first.prompt_tokens:.2f}, "
          f"rounds 2+ {share:.2f}")  # fmt: skip
    assert share > 0.8
    planner.close()


async def test_a_unit_failing_in_a_later_round_fails_only_its_pair() -> None:
    planner, engine = judge()
    target = pairs(1, first=3)[0]
    calls = 0
    original = engine._score_one

    def score_one(unit: ScoreUnit):  # type: ignore[no-untyped-def]
        nonlocal calls
        if len(engine.calls) >= 2 and "Reply 3" in engine.tokenizer.decode(
            list(unit.prompt_token_ids)
        ):
            calls += 1
            return RuntimeError("boom")
        return original(unit)

    engine._score_one = score_one  # type: ignore[method-assign]
    # A tight δ keeps every pair open past round 1.
    options = ADAPTIVE.model_copy(update={"ensemble_delta": 1e-6})
    results = (await planner.label([*pairs(3), target], SPEC, options)).results
    assert calls > 0
    assert [type(r).__name__ for r in results] == ["Label", "Label", "Label", "PairError"]
    planner.close()


def test_adaptive_cot_is_refused_naming_the_option() -> None:
    with pytest.raises(ValidationError, match="ensemble `adaptive` works with mode `plain`"):
        LabelOptions(ensemble="adaptive", mode="cot")
    with pytest.raises(ValidationError) as raised:
        LabelOptions(ensemble="adaptive", ensemble_delta=0.9)
    assert raised.value.errors()[0]["loc"] == ("ensemble_delta",)


async def test_full_labels_are_bit_for_bit_what_they_were_before_adaptive() -> None:
    """The wire form of these labels, hashed on the commit before adaptive ensembles
    existed (29a25d7): `ensemble: full`, the default, must not move a bit."""
    planner, _ = judge(agreeing=False)
    batch = pairs(6)
    wire = []
    for options in (
        LabelOptions(per_principle=True),
        LabelOptions(principles=5, seed=3, aggregator="mean_prob", per_principle=True),
    ):
        results = (await planner.label(batch, SPEC, options)).results
        wire += [r.model_dump_json(exclude_none=True) for r in results]
        assert all(isinstance(r, Label) and r.ensemble is None for r in results)
    digest = hashlib.sha256("\n".join(wire).encode()).hexdigest()
    assert digest == "3c373d5ffdde166b748337e96158c42682c53c013fbb95636e73dcb6b17df766"
    planner.close()


async def test_a_length_controlled_profile_averages_beta_over_the_principles_scored() -> None:
    """A profile's length term is β̄_S·L over the label's own principles S (DESIGN.md §2;
    labeling/calibration_profile.py): for an adaptive label, the ones it scored. The temperature
    needs no change: the margin is the same statistic, a mean of per-principle margins."""
    import math

    from cai_judge.labeling.calibration_profile import (
        CalibrationProfile,
        CalibrationTerms,
        FitRecord,
        LengthFitRecord,
        calibrate_label,
        label_key,
    )

    planner, _ = judge()
    label = (await planner.label(pairs(1), SPEC, ADAPTIVE)).labels[0]
    planner.close()
    assert label.ensemble is not None and label.ensemble.scored < 16
    beta = {pid: i / 10 for i, pid in enumerate(SPEC.principle_ids)}
    profile = CalibrationProfile.create(
        label_key(label),
        CalibrationTerms(inverse_temperature=2.0, length_sensitivity=beta),
        FitRecord(
            gold_sha256="0" * 64, gold_pairs=100, folds=5, seed=0, ece_raw=0.2,
            ece_cross_validated=0.1, brier_raw=0.26, brier_cross_validated=0.24,
        ),
        LengthFitRecord(source="unlabeled", path="pairs.jsonl", sha256="1" * 64, pairs=500),
    )  # fmt: skip
    calibrated = calibrate_label(label, profile, 40, 10)
    used = sum(beta[p] for p in label.principles) / len(label.principles)
    every = sum(beta.values()) / len(beta)
    assert used != every
    expected = 2.0 * (label.margin - used * (math.log(40) - math.log(10)))
    assert calibrated.margin == pytest.approx(expected, rel=1e-12)


async def test_admission_counts_every_selected_principle_adaptives_worst_case() -> None:
    planner, _ = judge()
    plan = await planner.plan(pairs(3), SPEC, ADAPTIVE)
    assert plan.unit_count == 3 * 16 * 2  # counted before any work, as for `full`
    batch = await planner.run(plan)
    assert batch.usage.score_units < plan.unit_count  # what it then scored
    planner.close()
