"""Labeling protocols, derived from one judge run's per-principle numbers.

Every protocol is a pure function of the per-principle (s_ab, s_ba) of DESIGN.md §2, so
the engine runs once and a comparison between protocols cannot be blurred by batch noise:
`cai` (ours), `single-order` (TRL, AlpacaEval), `both-orders-tie` (FastChat's MT-bench
rule), `single-principle`, and `cot`, which reads a separate CoT run (`SEPARATE_RUN`).

Each protocol's rule: docs/internals.md, section "evaluation/protocols.py".
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from cai_judge.constants import DEFAULT_SEED
from cai_judge.labeling.label_math import (
    Aggregator,
    Preferred,
    PrincipleBreakdown,
    aggregate_margin,
    preferred_from_margin,
    sigmoid,
)

Order = Literal["ab", "ba"]


class Protocol(StrEnum):
    CAI = "cai"
    SINGLE_ORDER = "single-order"
    BOTH_ORDERS_TIE = "both-orders-tie"
    SINGLE_PRINCIPLE = "single-principle"
    COT = "cot"


# Protocols derived from a judge run of their own (not the plain run the others share).
SEPARATE_RUN: frozenset[Protocol] = frozenset({Protocol.COT})

PROTOCOL_DESCRIPTIONS: dict[Protocol, str] = {
    Protocol.CAI: "both orders, every principle, mean of log-odds (cai-judge)",
    Protocol.SINGLE_ORDER: "one seeded random order per pair, every principle (TRL, AlpacaEval)",
    Protocol.BOTH_ORDERS_TIE: "both orders; a tie when they disagree (FastChat MT-bench)",
    Protocol.SINGLE_PRINCIPLE: "the first principle only, both orders",
    Protocol.COT: "CoT rationale per principle and order, probabilities clamped (CAI §4.1)",
}


@dataclass(frozen=True, slots=True)
class PairScores:
    """One pair's per-principle numbers, in constitution order."""

    pair_id: str
    principles: tuple[PrincipleBreakdown, ...]

    def __post_init__(self) -> None:
        if not self.principles:
            raise ValueError(f"pair {self.pair_id!r} has no principle scores")


@dataclass(frozen=True, slots=True)
class ProtocolLabel:
    """One pair's label under one protocol.

    `consistency`, `position_bias` and `answer_mass` describe the principles the protocol
    uses, measured on both orders even for `single-order`: they say whether the one order
    it happened to see was a position-robust choice.
    """

    pair_id: str
    preferred: Preferred
    p_a: float
    margin: float
    consistency: float
    position_bias: float
    answer_mass: float
    order: Order | None = None  # the order `single-order` used


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _label(
    pair_id: str,
    used: Sequence[PrincipleBreakdown],
    preferred: Preferred,
    p_a: float,
    margin: float,
    order: Order | None = None,
) -> ProtocolLabel:
    return ProtocolLabel(
        pair_id=pair_id,
        preferred=preferred,
        p_a=p_a,
        margin=margin,
        consistency=_mean([1.0 if b.agree else 0.0 for b in used]),
        position_bias=_mean([b.bias for b in used]),
        answer_mass=min(b.answer_mass for b in used),
        order=order,
    )


def _ensemble(pair_id: str, used: Sequence[PrincipleBreakdown]) -> ProtocolLabel:
    # The same function the Judge uses, so `cai` here is the served label to the bit.
    margin = aggregate_margin(used, Aggregator.MEAN_LOGODDS)
    return _label(pair_id, used, preferred_from_margin(margin), sigmoid(margin), margin)


def cai_label(scores: PairScores) -> ProtocolLabel:
    return _ensemble(scores.pair_id, scores.principles)


def single_principle_label(scores: PairScores) -> ProtocolLabel:
    return _ensemble(scores.pair_id, scores.principles[:1])


def single_order_choice(pair_id: str, seed: int) -> Order:
    """The order `single-order` shows a pair in: a coin seeded by (seed, pair id).

    Hashing the id rather than drawing from one stream keeps a pair's order the same
    whatever else is in the gold file, so two judges compared on it see the same orders.
    """
    digest = hashlib.sha256(f"single-order:{seed}:{pair_id}".encode()).digest()
    return "ab" if digest[0] & 1 == 0 else "ba"


def single_order_label(scores: PairScores, seed: int) -> ProtocolLabel:
    order = single_order_choice(scores.pair_id, seed)
    used = scores.principles
    # s = ℓ_A − ℓ_B is the log-odds for whatever was shown as (A): response a in order
    # ab, response b in order ba, where a's log-odds is therefore −s.
    margin = _mean([b.s_ab for b in used]) if order == "ab" else -_mean([b.s_ba for b in used])
    return _label(
        scores.pair_id, used, preferred_from_margin(margin), sigmoid(margin), margin, order
    )


def both_orders_tie_label(scores: PairScores) -> ProtocolLabel:
    used = scores.principles
    verdict_ab = preferred_from_margin(_mean([b.s_ab for b in used]))
    verdict_ba = preferred_from_margin(-_mean([b.s_ba for b in used]))
    if verdict_ab != verdict_ba or verdict_ab == "tie":
        return _label(scores.pair_id, used, "tie", 0.5, 0.0)
    # Both orders agree, so the two-order mean has their sign; FastChat gives no
    # probability, and this is the one the same judge would give with both orders.
    consistent = _ensemble(scores.pair_id, used)
    return _label(scores.pair_id, used, verdict_ab, consistent.p_a, consistent.margin)


def derive(
    protocol: Protocol, pairs: Sequence[PairScores], seed: int = DEFAULT_SEED
) -> list[ProtocolLabel]:
    """Labels for every pair under one protocol, in input order."""
    if protocol in (Protocol.CAI, Protocol.COT):
        # For `cot`, `pairs` come from the CoT run and hold the clamped numbers.
        return [cai_label(p) for p in pairs]
    if protocol is Protocol.SINGLE_ORDER:
        return [single_order_label(p, seed) for p in pairs]
    if protocol is Protocol.BOTH_ORDERS_TIE:
        return [both_orders_tie_label(p) for p in pairs]
    return [single_principle_label(p) for p in pairs]


def principle_verdicts(pairs: Sequence[PairScores]) -> dict[str, list[Preferred]]:
    """Each principle's own both-order verdict per pair, keyed in constitution order."""
    verdicts: dict[str, list[Preferred]] = {}
    for scores in pairs:
        for b in scores.principles:
            verdicts.setdefault(b.principle_id, []).append(preferred_from_margin(b.margin))
    lengths = {len(v) for v in verdicts.values()}
    if len(lengths) > 1:
        raise ValueError("pairs were scored on different principles")
    return verdicts
