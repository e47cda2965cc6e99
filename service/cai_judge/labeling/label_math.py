"""The label math of DESIGN.md §2, as pure functions with no I/O.

Everything here is written so that swapping response a and b negates the margin and
complements p_a *to the bit*: the per-principle scores of the swapped pair are the same
floats with the two orders exchanged, and every step below is an odd function computed
in a way that floating point keeps odd (see `sigmoid`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from cai_judge.constants import DEFAULT_LOW_MASS_THRESHOLD

Preferred = Literal["a", "b", "tie"]


class Aggregator(StrEnum):
    MEAN_LOGODDS = "mean_logodds"
    MEAN_PROB = "mean_prob"


@dataclass(frozen=True, slots=True)
class OrderScore:
    """ℓ_A and ℓ_B: full-vocabulary log-probs of the answer tokens for one order."""

    logprob_a: float
    logprob_b: float

    @property
    def score(self) -> float:
        """s = ℓ_A − ℓ_B: positive when the model picks the option shown first."""
        return self.logprob_a - self.logprob_b

    @property
    def answer_mass(self) -> float:
        return math.exp(self.logprob_a) + math.exp(self.logprob_b)


@dataclass(frozen=True, slots=True)
class PrincipleScores:
    """Both orders of one principle for one pair."""

    principle_id: str
    order_ab: OrderScore  # response_a shown as option (A)
    order_ba: OrderScore  # response_b shown as option (A)


@dataclass(frozen=True, slots=True)
class PrincipleBreakdown:
    principle_id: str
    s_ab: float
    s_ba: float
    margin: float
    bias: float
    agree: bool
    answer_mass: float


@dataclass(frozen=True, slots=True)
class LabelNumbers:
    preferred: Preferred
    margin: float
    p_a: float
    position_bias: float
    consistency: float
    answer_mass: float
    low_confidence: bool
    per_principle: tuple[PrincipleBreakdown, ...]


def sigmoid(x: float) -> float:
    """Logistic function with σ(−x) == 1 − σ(x) exactly in floating point.

    Negative inputs are computed as 1 − σ(|x|) through the same expression, so the
    swapped pair's p_a is bit-for-bit the complement of the original's.
    """
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    return 1.0 - 1.0 / (1.0 + math.exp(x))


# 2·atanh(±1) is infinite; keep margins finite (JSON has no inf) with a symmetric clamp
# so that oddness survives.
_MAX_TWICE_PROB_DELTA = 1.0 - 2.0**-52


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def breakdown(
    principle_id: str, s_ab: float, s_ba: float, answer_mass: float
) -> PrincipleBreakdown:
    """A principle's §2 numbers from its two score differences (s = ℓ_A − ℓ_B per order)."""
    return PrincipleBreakdown(
        principle_id=principle_id,
        s_ab=s_ab,
        s_ba=s_ba,
        margin=(s_ab - s_ba) / 2,
        bias=(s_ab + s_ba) / 2,
        agree=_sign(s_ab) == -_sign(s_ba),
        answer_mass=answer_mass,
    )


def principle_breakdown(scores: PrincipleScores) -> PrincipleBreakdown:
    return breakdown(
        scores.principle_id,
        scores.order_ab.score,
        scores.order_ba.score,
        min(scores.order_ab.answer_mass, scores.order_ba.answer_mass),
    )


def _mean(values: Sequence[float]) -> float:
    # Plain left-to-right sum: negating every input negates the result exactly,
    # which math.fsum also does but statistics.mean (fractions) makes slow.
    return sum(values) / len(values)


def aggregate_margin(breakdowns: Sequence[PrincipleBreakdown], aggregator: Aggregator) -> float:
    """The pair's log-odds margin that response_a is better."""
    if aggregator is Aggregator.MEAN_LOGODDS:
        return _mean([b.margin for b in breakdowns])
    # mean_prob (CAI / RLAIF papers): p_a = mean ½(σ(s_ab) + σ(−s_ba)) = ½ + D with
    # D = mean ½(σ(s_ab) − σ(s_ba)); then logit(½ + D) = 2·atanh(2D), which is odd in D.
    delta = _mean([(sigmoid(b.s_ab) - sigmoid(b.s_ba)) / 2 for b in breakdowns])
    twice = max(-_MAX_TWICE_PROB_DELTA, min(_MAX_TWICE_PROB_DELTA, 2 * delta))
    return 2 * math.atanh(twice)


def preferred_from_margin(margin: float) -> Preferred:
    if margin > 0:
        return "a"
    if margin < 0:
        return "b"
    return "tie"


# -- CoT clamping (DESIGN.md §2, CAI §4.1) ----------------------------------------------
#
# Chain-of-thought answers come out overconfident, so each order's probability is clamped
# to [1 − p_max, p_max] before aggregation. The clamp is applied to the log-odds s = ℓ_A − ℓ_B
# with the symmetric bound ±logit(p_max): clamp(−s) == −clamp(s) exactly in floating point
# (min/max and negation are exact), so a swapped pair's clamped margin is still exactly the
# negation, and σ of a clamped s lies in [1 − p_max, p_max] (to the last ulp of the bound).


def clamp_bound(max_probability: float) -> float:
    """The log-odds bound logit(p_max) for probabilities clamped to [1 − p_max, p_max]."""
    if not 0.5 < max_probability < 1.0:
        raise ValueError(
            f"the clamp's upper probability must lie in (0.5, 1), got {max_probability}"
        )
    return math.log(max_probability / (1.0 - max_probability))


def clamp_log_odds(s: float, bound: float) -> float:
    """s limited to [−bound, bound]; odd in s to the bit."""
    return max(-bound, min(bound, s))


def clamped_breakdown(raw: PrincipleBreakdown, bound: float) -> PrincipleBreakdown:
    """A principle's numbers recomputed from its clamped per-order log-odds."""
    return breakdown(
        raw.principle_id,
        clamp_log_odds(raw.s_ab, bound),
        clamp_log_odds(raw.s_ba, bound),
        raw.answer_mass,
    )


def compute_label(
    principle_scores: Sequence[PrincipleScores],
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS,
    low_mass_threshold: float = DEFAULT_LOW_MASS_THRESHOLD,
    clamp: float | None = None,
) -> LabelNumbers:
    """Turn both orders' answer log-probs over the selected principles into one label.

    `clamp` (a log-odds bound, see `clamp_bound`) limits each order's log-odds first: the
    CoT judge's numbers. The caller computes the raw label with `clamp=None` beside it.
    """
    if not principle_scores:
        raise ValueError("a label needs at least one principle")
    breakdowns = tuple(principle_breakdown(s) for s in principle_scores)
    if clamp is not None:
        breakdowns = tuple(clamped_breakdown(b, clamp) for b in breakdowns)
    margin = aggregate_margin(breakdowns, aggregator)
    answer_mass = min(b.answer_mass for b in breakdowns)
    return LabelNumbers(
        preferred=preferred_from_margin(margin),
        margin=margin,
        p_a=sigmoid(margin),
        position_bias=_mean([b.bias for b in breakdowns]),
        consistency=_mean([1.0 if b.agree else 0.0 for b in breakdowns]),
        answer_mass=answer_mass,
        low_confidence=answer_mass < low_mass_threshold,
        per_principle=breakdowns,
    )


def selection_seed(
    prompt_key: str,
    response_a: str,
    response_b: str,
    constitution_version: str,
    request_seed: int,
) -> int:
    """Seed for principle sampling; the responses are sorted so a↔b swaps select alike."""
    first, second = sorted((response_a, response_b))
    material = json.dumps(
        [prompt_key, first, second, constitution_version, request_seed],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "big")


def select_principles(principle_ids: Sequence[str], k: int | None, seed: int) -> list[str]:
    """`k=None` means all. Sampled without replacement; kept in constitution order."""
    if k is None or k >= len(principle_ids):
        return list(principle_ids)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    chosen = set(random.Random(seed).sample(range(len(principle_ids)), k))
    return [pid for i, pid in enumerate(principle_ids) if i in chosen]


def draw_order(principle_ids: Sequence[str], k: int | None, seed: int) -> list[str]:
    """The principles `select_principles` selects, in the order its seeded sampler draws
    them: the order an adaptive ensemble scores them in (labeling/ensemble.py). With every
    principle selected, the same sampler draws all of them (a seeded permutation), so the
    scored prefix is a uniformly random subset either way."""
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    count = len(principle_ids) if k is None else min(k, len(principle_ids))
    return [principle_ids[i] for i in random.Random(seed).sample(range(len(principle_ids)), count)]
