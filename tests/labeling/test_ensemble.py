"""The adaptive ensemble's stopping rule (labeling/ensemble.py): pure, so tested on numbers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cai_judge.labeling.ensemble import (
    clip_of,
    decide,
    principle_value,
    round_sizes,
    stopping_round,
)
from cai_judge.labeling.label_math import Aggregator

values_16 = st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=16)


@given(st.integers(1, 64), st.integers(1, 8), st.integers(1, 8))
def test_round_sizes_cover_k_once(k: int, first: int, later: int) -> None:
    sizes = round_sizes(k, first, later)
    assert sum(sizes) == k
    assert sizes[0] == min(first, k)
    assert all(1 <= s <= later for s in sizes[1:])


@given(values_16, st.integers(0, 16), st.sampled_from([0.01, 0.05, 0.2]))
def test_swapping_the_pair_stops_alike_on_the_other_side(
    values: list[float], extra: int, delta: float
) -> None:
    population = len(values) + extra
    mine = decide(values, population, delta)
    swapped = decide([-x for x in values], population, delta)
    assert mine.stop == swapped.stop
    assert mine.wealth == swapped.wealth  # to the bit
    assert mine.certain == swapped.certain
    assert {mine.side, swapped.side} in ({None}, {"a", "b"})


@given(values_16, st.integers(0, 16), st.sampled_from([0.01, 0.05, 0.2]))
def test_a_certain_side_survives_the_worst_remaining_principles(
    values: list[float], extra: int, delta: float
) -> None:
    population = len(values) + extra
    decision = decide(values, population, delta)
    if decision.certain:
        c = clip_of(values[:2])
        worst = -c if decision.side == "a" else c
        clipped = [max(-c, min(c, x)) for x in values]
        full = sum(clipped) + worst * (population - len(values))
        assert (full > 0) if decision.side == "a" else (full < 0)


@given(values_16)
def test_every_principle_scored_stops_with_the_full_label(values: list[float]) -> None:
    decision = decide(values, len(values), 0.05)
    assert decision.stop and decision.side is None


def test_principles_that_agree_stop_well_before_the_end() -> None:
    # Real judges' margins look like this (SmolLM2-135M on a gold pair): small, tight.
    values = [
        0.2,
        0.17,
        0.12,
        0.16,
        0.07,
        0.1,
        0.16,
        0.09,
        0.17,
        0.2,
        0.2,
        0.21,
        0.08,
        0.2,
        0.07,
        0.17,
    ]
    number, decision = stopping_round(values, 0.05)
    scored = sum(round_sizes(16)[:number])
    assert decision.side == "a"
    assert scored <= 10
    assert not decision.certain  # the evidence stopped it, not the worst case


def test_a_split_ensemble_scores_every_principle() -> None:
    values = [1.0, -1.0] * 8
    number, decision = stopping_round(values, 0.05)
    assert number == len(round_sizes(16))
    assert decision.side is None


def test_the_worst_case_stop_needs_more_than_half_at_the_clip() -> None:
    # Every value at the clip (c = 1.25 here): the deterministic stop comes once the
    # total cannot be brought back by the rest at −c each.
    assert decide([1.0] * 9 + [1.25] * 3, 16, 1e-9).certain
    assert not decide([1.0] * 6, 16, 1e-9).certain


def test_nothing_stops_early_when_the_first_round_is_all_zero() -> None:
    assert not decide([0.0, 0.0, 1.0, 1.0, 1.0, 1.0], 8, 0.5).stop


@pytest.mark.parametrize(
    "population",
    [
        [1.0] * 8 + [-1.0] * 8,
        [0.3] * 5 + [-0.3] * 6,
        [0.1] * 10 + [-0.5] * 6,
        [0.2] * 7 + [-0.2] * 9,
    ],
)
def test_a_wrong_side_is_at_most_half_delta_often(population: list[float]) -> None:
    """Ville's inequality, checked by simulation: over random draw orders, stopping on "a"
    while the population's clipped mean (the clip the order's first round set) is ≤ 0
    happens at most δ/2 of the time (here δ = 0.2)."""
    delta = 0.2
    draws = random.Random(7)
    wrong = 0
    trials = 3000
    for _ in range(trials):
        order = population[:]
        draws.shuffle(order)
        _, decision = stopping_round(order, delta)
        c = clip_of(order[:2])
        wrong += decision.side == "a" and sum(max(-c, min(c, x)) for x in order) <= 0
    assert wrong / trials <= delta / 2


@given(st.floats(-50, 50), st.floats(-50, 50), st.sampled_from(list(Aggregator)))
def test_principle_values_are_odd(s_ab: float, s_ba: float, agg: Aggregator) -> None:
    value = principle_value(s_ab, s_ba, agg)
    assert principle_value(s_ba, s_ab, agg) == -value
    if agg is Aggregator.MEAN_PROB:
        assert abs(value) <= 0.5


def test_mean_prob_values_are_the_aggregators_summands() -> None:
    # p_a − ½ for one principle under mean_prob is ½(σ(s_ab) − σ(s_ba)) (DESIGN.md §2).
    assert principle_value(0.0, 0.0, Aggregator.MEAN_PROB) == 0.0
    assert principle_value(50.0, -50.0, Aggregator.MEAN_PROB) == pytest.approx(0.5)
    assert principle_value(3.0, -1.0, Aggregator.MEAN_LOGODDS) == 2.0
    assert principle_value(1.0, 0.0, Aggregator.MEAN_LOGODDS) == 0.5


@pytest.mark.parametrize(
    ("values", "population", "delta", "message"),
    [
        ([1.0], 4, 0.0, "delta"),
        ([1.0], 4, 1.0, "delta"),
        ([1.0, 1.0], 1, 0.05, "population"),
    ],
)
def test_bad_arguments_are_named(
    values: list[float], population: int, delta: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        decide(values, population, delta)
