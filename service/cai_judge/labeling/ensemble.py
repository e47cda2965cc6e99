"""Adaptive principle ensembles: when may a label stop scoring principles (DESIGN.md §2)?

A label's side is the sign of a mean over K selected principles. Scored in a uniformly random
(seeded) order, the first n principles are a simple random sample *without replacement* of
those K, so the question "can the remaining K − n principles still change the side?" is a
sequential test about a finite population's mean. The rule here is the betting test of
Waudby-Smith & Ramdas, "Confidence sequences for sampling without replacement" (NeurIPS 2020),
§3: under the null "population mean = 0", the next draw's conditional mean is known exactly,
m_t = −S_{t−1} / (K − t + 1), so the wealth Π (1 + λ_t (x_t − m_t)) with predictable bets
λ_t ≥ 0 is a nonnegative (super)martingale for every population whose mean is ≤ 0, and Ville's
inequality bounds the chance it ever reaches 2/δ by δ/2. That makes it:

- anytime-valid: checked after every round, stopped whenever, with no union bound over rounds
  (a Hoeffding or empirical-Bernstein bound per look would pay one);
- finite-population exact: m_t carries the sampling-without-replacement correction (what
  Serfling / Bardenet–Maillard give as a factor, the martingale has built in), and once the
  remaining principles cannot bring the mean back to 0 even at the clip (m_t < −c), the null
  is impossible and the side is certain: the deterministic "its sign cannot change" stop;
- adaptive to the spread: bets follow aGRAPA (Waudby-Smith & Ramdas, "Estimating means of
  bounded random variables by betting", JRSS-B 2023), λ = (μ̂ − m)/(σ̂² + (μ̂ − m)²), so
  principles that agree closely are decided after few draws, unlike a range-only Hoeffding
  bound which at K = 16 can barely stop before the half.

The values must be bounded, and the judge's margins differ in scale by model, so the first
round (two principles) only sets the bound: c = 1.25 × its largest |value|, every value is
clipped to ±c, and the test runs on the principles after it, with the first round's total as
a known offset and its mean and spread as the bets' starting point. Given the first round, the
remaining principles are still a uniformly random order of the rest, so the test is valid
conditionally and therefore outright.

Each side is tested at δ/2, so P(a label stops on the side opposite the sign of the full,
clipped ensemble's mean) ≤ δ. The clipped and unclipped means agree unless a later principle
lies past the clip against the others; how often the adaptive side matches the full label's is
measured (bench/adaptive.py). The value tested is the aggregator's own summand: the margin
(`mean_logodds`) or ½(σ(s_ab) − σ(s_ba)) (`mean_prob`, whose mean's sign is the label's).

Everything is odd in the values and computed so that floating point keeps it odd: a pair and
its swap stop at the same round with opposite sides, to the bit (DESIGN.md §2, antisymmetry).
Pure: no I/O, no randomness; the order of the values is the caller's seeded draw order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cai_judge.labeling.label_math import Aggregator, sigmoid

Ensemble = Literal["full", "adaptive"]
ENSEMBLES: tuple[Ensemble, ...] = ("full", "adaptive")

RULE = "wor-betting"
DEFAULT_DELTA = 0.1
# The first round's largest |value| times this is the clip c for the rest of the label: the
# judge's margins differ in scale by model (SmolLM2-135M's sit around 0.01–0.5 nats, a
# larger model's at several), and a clip far above the values makes the test slow. Set
# from the first round only, so that, given the first round, the clip is fixed and the
# test over the remaining principles is valid (see the module docstring).
CLIP_FACTOR = 1.25
# The bet is at most this share of the largest one that keeps wealth nonnegative
# (a full Kelly bet at the bound would lose everything on one contrary principle).
MAX_BET_SHARE = 0.9
# Principles per round. The first round only sets the clip and the bets' starting point.
FIRST_ROUND = 2
LATER_ROUND = 2
# A first round with every |value| below this (nats, or probability for mean_prob) sets no
# usable scale: such a label scores every principle.
MIN_CLIP = 1e-9


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rule says after a round."""

    stop: bool
    # "a" or "b" once a side is certified; None while undecided (and when all were scored).
    side: Literal["a", "b"] | None
    # The larger of the two sides' test wealths: the evidence so far (stop at ≥ 2/δ).
    wealth: float
    # True when the side is certain, not just likely: the remaining principles cannot
    # move the clipped mean back across 0 even at the clip.
    certain: bool = False


def round_sizes(k: int, first: int = FIRST_ROUND, later: int = LATER_ROUND) -> list[int]:
    """How many principles each round scores, for k selected principles; sums to k."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if first < 1 or later < 1:
        raise ValueError("round sizes must be at least 1")
    sizes = [min(first, k)]
    while sum(sizes) < k:
        sizes.append(min(later, k - sum(sizes)))
    return sizes


def principle_value(s_ab: float, s_ba: float, aggregator: Aggregator) -> float:
    """The aggregator's per-principle summand: the margin (mean_logodds) or
    ½(σ(s_ab) − σ(s_ba)) (mean_prob), whose mean's sign is the label's side.

    Odd under swapping the pair (s_ab, s_ba → s_ba, s_ab), to the bit.
    """
    if aggregator is Aggregator.MEAN_PROB:
        return (sigmoid(s_ab) - sigmoid(s_ba)) / 2
    return (s_ab - s_ba) / 2


def clip_of(first_round: Sequence[float], factor: float = CLIP_FACTOR) -> float:
    """The clip c the rest of a label's test uses: `factor` times the first round's largest
    |value| (below MIN_CLIP, e.g. all 0, the rule never stops early)."""
    return factor * max((abs(x) for x in first_round), default=0.0)


def _clip(x: float, c: float) -> float:
    return max(-c, min(c, x))


def _wealth(
    values: Sequence[float],
    population: int,
    c: float,
    total: float,
    prior_mean: float,
    prior_squares: float,
) -> tuple[float, bool]:
    """The test of "the clipped population's total ≤ 0", given `total` already known
    (the first round), on the next `values` (clipped, in draw order) of the `population`
    principles not in the first round: its wealth, and whether the null became impossible
    (the remaining principles cannot bring the total back to 0 even at −c each)."""
    wealth = 1.0
    mean_hat, squares, seen = prior_mean, prior_squares, 1
    for t, x in enumerate(values, start=1):
        null_mean = -total / (population - t + 1)
        if null_mean < -c:
            return wealth, True
        edge = mean_hat - null_mean
        if edge > 0 and null_mean < c:
            # aGRAPA: the Kelly bet for the running mean and variance, capped.
            bet = edge / (squares / seen + edge * edge)
            if c + null_mean > 0:  # at 0 no draw can lose: any bet is safe
                bet = min(bet, MAX_BET_SHARE / (c + null_mean))
            wealth *= 1.0 + bet * (x - null_mean)
        total += x
        squares += (x - mean_hat) ** 2
        seen += 1
        mean_hat += (x - mean_hat) / seen
    left = population - len(values)
    return wealth, left > 0 and -total / left < -c


def decide(
    values: Sequence[float], population: int, delta: float, first: int = FIRST_ROUND
) -> Decision:
    """After scoring `values` (`principle_value`s, in the seeded draw order) of
    `population` principles, the first `first` of them the first round: stop, and on
    which side?

    Stops with a side when one side's test wealth reaches 2/δ or its null became
    impossible; stops with no side once every principle is scored (the full label).
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    n = len(values)
    if n > population:
        raise ValueError(f"{n} values scored of a population of {population}")
    if n == population:
        return Decision(stop=True, side=None, wealth=1.0)
    c = clip_of(values[:first])
    if n < first or c < MIN_CLIP:
        return Decision(stop=False, side=None, wealth=1.0)
    head = [_clip(x, c) for x in values[:first]]
    rest = [_clip(x, c) for x in values[first:]]
    total = sum(head)
    mean = total / first
    # The first round's spread, floored at (c/4)² so two close values cannot make the
    # first bets reckless.
    squares = max(sum((x - mean) ** 2 for x in head) / first, (c / 4) ** 2)
    remaining = population - first
    wealth_a, certain_a = _wealth(rest, remaining, c, total, mean, squares)
    wealth_b, certain_b = _wealth([-x for x in rest], remaining, c, -total, -mean, squares)
    wealth = max(wealth_a, wealth_b)
    threshold = 2.0 / delta
    if certain_a or wealth_a >= threshold:
        return Decision(stop=True, side="a", wealth=wealth, certain=certain_a)
    if certain_b or wealth_b >= threshold:
        return Decision(stop=True, side="b", wealth=wealth, certain=certain_b)
    return Decision(stop=False, side=None, wealth=wealth)


def stopping_round(
    values: Sequence[float], delta: float, sizes: Sequence[int] | None = None
) -> tuple[int, Decision]:
    """Replay the rounds over all of a pair's values (draw order): the 1-based round where
    the rule stops and its decision. The values past that round are never looked at, which
    is what lets a benchmark replay a full run's per-principle scores offline."""
    sizes = list(sizes) if sizes is not None else round_sizes(len(values))
    scored = 0
    for number, size in enumerate(sizes, start=1):
        scored += size
        decision = decide(values[:scored], len(values), delta, sizes[0])
        if decision.stop:
            return number, decision
    raise ValueError("the round sizes do not cover every value")
