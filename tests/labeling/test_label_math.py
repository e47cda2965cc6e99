"""The label math of DESIGN.md §2: property tests and hand-computed numbers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cai_judge.labeling.label_math import (
    Aggregator,
    OrderScore,
    PrincipleScores,
    compute_label,
    select_principles,
    selection_seed,
    sigmoid,
)

# Answer log-probs as a model produces them: log-probabilities, so <= 0.
logprobs = st.floats(min_value=-30.0, max_value=0.0, allow_nan=False)
order_scores = st.builds(OrderScore, logprobs, logprobs)
principle_lists = st.lists(st.tuples(order_scores, order_scores), min_size=1, max_size=16)
aggregators = st.sampled_from(list(Aggregator))


def as_principles(raw: list[tuple[OrderScore, OrderScore]]) -> list[PrincipleScores]:
    return [PrincipleScores(f"p{i}", ab, ba) for i, (ab, ba) in enumerate(raw)]


def swapped(raw: list[tuple[OrderScore, OrderScore]]) -> list[PrincipleScores]:
    # Swapping a and b exchanges the orders: the swap's "ab" prompt is the original's "ba".
    return [PrincipleScores(f"p{i}", ba, ab) for i, (ab, ba) in enumerate(raw)]


@given(principle_lists, aggregators)
def test_swapping_responses_negates_margin_exactly(raw, aggregator):
    label = compute_label(as_principles(raw), aggregator)
    mirror = compute_label(swapped(raw), aggregator)
    assert mirror.margin == -label.margin
    assert mirror.p_a == 1 - label.p_a
    assert mirror.position_bias == label.position_bias
    assert mirror.consistency == label.consistency
    assert mirror.answer_mass == label.answer_mass
    assert {label.preferred, mirror.preferred} in ({"a", "b"}, {"tie"})


@given(principle_lists, aggregators, st.floats(min_value=0, max_value=1))
def test_bounds(raw, aggregator, threshold):
    label = compute_label(as_principles(raw), aggregator, threshold)
    assert 0.0 <= label.p_a <= 1.0
    assert 0.0 <= label.consistency <= 1.0
    assert 0.0 <= label.answer_mass <= 2.0 + 1e-12
    assert math.isfinite(label.margin)
    assert label.low_confidence == (label.answer_mass < threshold)
    assert (label.margin > 0) == (label.preferred == "a")


@given(st.floats(min_value=-700, max_value=700, allow_nan=False))
def test_sigmoid_is_exactly_complementary(x):
    assert sigmoid(-x) == 1 - sigmoid(x)


def test_mean_logodds_on_hand_computed_numbers():
    # Principle 1: s_ab = ln .6 - ln .2 = ln 3, s_ba = ln .1 - ln .5 = -ln 5
    #   margin = (ln 3 + ln 5) / 2 = ln 15 / 2, bias = (ln 3 - ln 5) / 2, agree
    #   mass = min(.8, .6) = .6
    # Principle 2: s_ab = ln .3 - ln .3 = 0, s_ba = ln .4 - ln .2 = ln 2
    #   margin = -ln 2 / 2, bias = ln 2 / 2, agree: sign 0 vs -1 -> no
    #   mass = min(.6, .6) = .6
    p1 = PrincipleScores(
        "p1", OrderScore(math.log(0.6), math.log(0.2)), OrderScore(math.log(0.1), math.log(0.5))
    )
    p2 = PrincipleScores(
        "p2", OrderScore(math.log(0.3), math.log(0.3)), OrderScore(math.log(0.4), math.log(0.2))
    )
    label = compute_label([p1, p2], Aggregator.MEAN_LOGODDS)
    expected_margin = (math.log(15) / 2 - math.log(2) / 2) / 2  # = ln 7.5 / 4
    assert label.margin == pytest.approx(expected_margin, abs=1e-12)
    assert label.p_a == pytest.approx(1 / (1 + 7.5 ** (-1 / 4)), abs=1e-12)
    assert label.position_bias == pytest.approx(
        ((math.log(3) - math.log(5)) / 2 + math.log(2) / 2) / 2
    )
    assert label.consistency == 0.5
    assert label.answer_mass == pytest.approx(0.6)
    assert label.preferred == "a"
    assert not label.low_confidence
    assert [b.agree for b in label.per_principle] == [True, False]


def test_mean_prob_on_hand_computed_numbers():
    # Same scores: p_a = mean ½(σ(s_ab) + σ(−s_ba))
    #   p1: ½(σ(ln 3) + σ(ln 5)) = ½(3/4 + 5/6) = 19/24
    #   p2: ½(σ(0) + σ(−ln 2)) = ½(1/2 + 1/3) = 5/12
    #   p_a = (19/24 + 10/24) / 2 = 29/48
    p1 = PrincipleScores(
        "p1", OrderScore(math.log(0.6), math.log(0.2)), OrderScore(math.log(0.1), math.log(0.5))
    )
    p2 = PrincipleScores(
        "p2", OrderScore(math.log(0.3), math.log(0.3)), OrderScore(math.log(0.4), math.log(0.2))
    )
    label = compute_label([p1, p2], Aggregator.MEAN_PROB)
    assert label.p_a == pytest.approx(29 / 48, abs=1e-12)
    assert label.margin == pytest.approx(math.log(29 / 19), abs=1e-12)  # logit(29/48)
    assert label.margin == pytest.approx(math.log(29 / 19), abs=1e-12)


def test_low_answer_mass_is_flagged_not_dropped():
    tiny = OrderScore(math.log(0.1), math.log(0.05))
    label = compute_label([PrincipleScores("p", tiny, tiny)], low_mass_threshold=0.5)
    assert label.low_confidence
    assert label.answer_mass == pytest.approx(0.15)


def test_position_bias_only_pair_is_a_tie():
    # The model always picks option (A) with the same strength: no preference at all.
    first = OrderScore(math.log(0.9), math.log(0.1))
    label = compute_label([PrincipleScores("p", first, first)])
    assert label.margin == 0.0
    assert label.preferred == "tie"
    assert label.p_a == 0.5
    assert label.position_bias == pytest.approx(math.log(9))
    assert label.consistency == 0.0


def test_empty_principles_refused():
    with pytest.raises(ValueError, match="at least one principle"):
        compute_label([])


texts = st.text(max_size=40)


@given(texts, texts, texts, st.integers(0, 2**32), st.integers(1, 16))
def test_selection_is_seeded_and_swap_invariant(prompt, a, b, seed, k):
    ids = [f"p{i}" for i in range(16)]
    chosen = select_principles(ids, k, selection_seed(prompt, a, b, "v1", seed))
    again = select_principles(ids, k, selection_seed(prompt, a, b, "v1", seed))
    swap = select_principles(ids, k, selection_seed(prompt, b, a, "v1", seed))
    assert chosen == again == swap
    assert len(chosen) == len(set(chosen)) == k
    assert chosen == [p for p in ids if p in chosen]  # constitution order kept


def test_selection_depends_on_seed_and_version():
    ids = [f"p{i}" for i in range(16)]
    picks = {
        tuple(select_principles(ids, 4, selection_seed("q", "a", "b", version, seed)))
        for version in ("v1", "v2")
        for seed in range(10)
    }
    assert len(picks) > 10


def test_selection_all_and_invalid_k():
    ids = ["x", "y"]
    assert select_principles(ids, None, 1) == ids
    assert select_principles(ids, 5, 1) == ids
    with pytest.raises(ValueError, match="at least 1"):
        select_principles(ids, 0, 1)


def test_preference_rows_follow_both_conventions():
    from cai_judge.labeling.export import preference_row
    from cai_judge.labeling.schema import ConstitutionRef, Label, Pair, TemplateRef

    pair = Pair(id="x", prompt="q", response_a="good", response_b="bad")

    def label(margin: float, preferred: str) -> Label:
        return Label(
            id="x", preferred=preferred, margin=margin, p_a=sigmoid(margin), position_bias=0,
            consistency=1, answer_mass=0.9, low_confidence=False, principles=["p"],
            selection="all", aggregator=Aggregator.MEAN_LOGODDS,
            constitution=ConstitutionRef(id="c", version="v"),
            template=TemplateRef(id="t", version="v"), model="m", seed=0,
        )  # fmt: skip

    row = preference_row(pair, label(-1.5, "b"))
    assert row is not None
    assert (row["chosen"], row["rejected"]) == ("bad", "good")
    assert row["margin"] == 1.5
    assert row["p_chosen"] == pytest.approx(sigmoid(1.5))
    row = preference_row(pair, label(0.7, "a"))
    assert row is not None and row["chosen"] == "good" and row["p_chosen"] == sigmoid(0.7)
    assert preference_row(pair, label(0.0, "tie")) is None
