"""Protocol derivations on hand-computed per-principle numbers (pure, no engine)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cai_judge.evaluation.protocols import (
    PairScores,
    Protocol,
    both_orders_tie_label,
    cai_label,
    derive,
    principle_verdicts,
    single_order_choice,
    single_order_label,
    single_principle_label,
)
from cai_judge.labeling.label_math import (
    OrderScore,
    PrincipleScores,
    breakdown,
    compute_label,
    principle_breakdown,
    sigmoid,
)


def pair(pair_id: str, *scores: tuple[float, float], mass: float = 0.9) -> PairScores:
    return PairScores(
        pair_id,
        tuple(
            breakdown(f"p{i}", s_ab, s_ba, mass - i / 10) for i, (s_ab, s_ba) in enumerate(scores)
        ),
    )


# p0: both orders pick a (s_ab > 0, s_ba < 0); p1: both orders pick the option shown first.
MIXED = pair("mixed", (2.0, -1.0), (1.0, 3.0))


def test_breakdown_matches_the_label_math():
    scores = PrincipleScores("p", OrderScore(-0.5, -2.0), OrderScore(-1.0, -0.25))
    expected = principle_breakdown(scores)
    assert breakdown("p", 1.5, -0.75, expected.answer_mass) == expected


def test_cai_is_the_served_label_to_the_bit():
    scores = [
        PrincipleScores("p0", OrderScore(-0.3, -1.9), OrderScore(-2.2, -0.1)),
        PrincipleScores("p1", OrderScore(-0.7, -0.8), OrderScore(-0.6, -1.4)),
    ]
    served = compute_label(scores)
    derived = cai_label(PairScores("x", served.per_principle))
    assert derived.margin == served.margin
    assert derived.p_a == served.p_a
    assert derived.preferred == served.preferred
    assert derived.consistency == served.consistency
    assert derived.position_bias == served.position_bias
    assert derived.answer_mass == served.answer_mass


def test_cai_hand_computed():
    label = cai_label(MIXED)
    # margins: (2 − (−1))/2 = 1.5 and (1 − 3)/2 = −1 → mean 0.25
    assert label.margin == pytest.approx(0.25)
    assert label.p_a == pytest.approx(sigmoid(0.25))
    assert label.preferred == "a"
    assert label.consistency == 0.5  # p0 agrees across orders, p1 does not
    assert label.position_bias == pytest.approx((0.5 + 2.0) / 2)
    assert label.answer_mass == pytest.approx(0.8)
    assert label.order is None


def test_single_principle_uses_only_the_first_principle():
    label = single_principle_label(MIXED)
    assert label.margin == pytest.approx(1.5)
    assert label.p_a == pytest.approx(sigmoid(1.5))
    assert label.consistency == 1.0
    assert label.position_bias == pytest.approx(0.5)
    assert label.answer_mass == pytest.approx(0.9)
    # Changing any later principle changes nothing.
    other = pair("mixed", (2.0, -1.0), (-9.0, 9.0), (5.0, 5.0))
    assert single_principle_label(other).margin == label.margin


def test_single_order_uses_exactly_one_order():
    ids = [f"pair-{i}" for i in range(40)]
    orders = {single_order_choice(i, seed=0) for i in ids}
    assert orders == {"ab", "ba"}  # a fair coin over 40 pairs shows both faces
    for pair_id in ids:
        scores = pair(pair_id, (2.0, -1.0), (1.0, 3.0))
        label = single_order_label(scores, seed=0)
        if label.order == "ab":
            # mean s_ab: the log-odds of whatever is shown first, which is a
            assert label.margin == pytest.approx(1.5)
            # ...and the unseen order's numbers do not matter
            changed = pair(pair_id, (2.0, 7.0), (1.0, -7.0))
        else:
            # −mean s_ba: b was shown first, so a's log-odds is −s
            assert label.margin == pytest.approx(-1.0)
            changed = pair(pair_id, (7.0, -1.0), (-7.0, 3.0))
        assert single_order_label(changed, seed=0).margin == label.margin
        assert label.p_a == pytest.approx(sigmoid(label.margin))


def test_single_order_coin_is_seeded_per_pair():
    ids = [f"pair-{i}" for i in range(64)]
    first = [single_order_choice(i, 0) for i in ids]
    assert first == [single_order_choice(i, 0) for i in ids]
    # Another seed flips some coins; the order of the gold file never matters.
    assert first != [single_order_choice(i, 1) for i in ids]
    labels = derive(Protocol.SINGLE_ORDER, [pair(i, (1.0, 0.5)) for i in reversed(ids)], seed=0)
    assert [x.order for x in labels] == first[::-1]


def test_both_orders_tie_when_the_orders_disagree():
    # order ab: mean s_ab = 1.5 → a; order ba: mean s_ba = 1 → b shown first wins → b.
    label = both_orders_tie_label(MIXED)
    assert label.preferred == "tie" and label.p_a == 0.5 and label.margin == 0.0
    assert cai_label(MIXED).preferred == "a"  # where cai still decides


def test_both_orders_tie_keeps_an_agreed_verdict():
    scores = pair("agree", (2.0, -1.0), (0.5, 0.25))
    # order ab: mean s_ab = 1.25 → a; order ba: mean s_ba = −0.375 → a
    label = both_orders_tie_label(scores)
    assert label.preferred == "a"
    assert label.p_a == cai_label(scores).p_a
    flipped = both_orders_tie_label(pair("agree", (-2.0, 1.0), (-0.5, -0.25)))
    assert flipped.preferred == "b" and flipped.p_a == pytest.approx(1 - label.p_a)


def test_both_orders_tie_on_an_exact_zero():
    assert both_orders_tie_label(pair("zero", (0.0, -1.0))).preferred == "tie"


finite = st.floats(min_value=-20, max_value=20, allow_nan=False)


@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=6))
def test_both_orders_tie_is_a_tie_exactly_when_the_orders_disagree(scores):
    label = both_orders_tie_label(pair("h", *scores))
    mean_ab = sum(s for s, _ in scores) / len(scores)
    mean_ba = sum(s for _, s in scores) / len(scores)
    verdict_ab = "a" if mean_ab > 0 else "b" if mean_ab < 0 else "tie"
    verdict_ba = "b" if mean_ba > 0 else "a" if mean_ba < 0 else "tie"
    if verdict_ab == verdict_ba != "tie":
        assert label.preferred == verdict_ab
    else:
        assert label.preferred == "tie" and label.p_a == 0.5


@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=6))
def test_protocols_that_see_both_orders_are_antisymmetric(scores):
    swapped = [(s_ba, s_ab) for s_ab, s_ba in scores]
    for derive_one in (cai_label, single_principle_label, both_orders_tie_label):
        label = derive_one(pair("s", *scores))
        mirror = derive_one(pair("s", *swapped))
        assert mirror.margin == -label.margin
        assert mirror.p_a == 1 - label.p_a
        assert math.isfinite(label.margin)


def test_derive_keeps_input_order_for_every_protocol():
    pairs = [pair("x", (1.0, -1.0)), pair("y", (-1.0, 1.0)), MIXED]
    for protocol in Protocol:
        assert [x.pair_id for x in derive(protocol, pairs)] == ["x", "y", "mixed"]


def test_principle_verdicts_per_principle():
    verdicts = principle_verdicts([MIXED, pair("y", (-1.0, 1.0), (0.0, 0.0))])
    assert verdicts == {"p0": ["a", "b"], "p1": ["b", "tie"]}
    with pytest.raises(ValueError, match="different principles"):
        principle_verdicts([MIXED, pair("z", (1.0, 0.0))])


def test_pair_scores_need_a_principle():
    with pytest.raises(ValueError, match="no principle"):
        PairScores("empty", ())
