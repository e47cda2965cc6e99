"""One judge run over a gold set: every principle, both orders, per-principle numbers kept.

This is the only module of `evaluation` that touches the engine (through the Judge); the
protocols and metrics are then computed from what it returns, without the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cai_judge.constants import (
    DEFAULT_COT_MAX_PROBABILITY,
    DEFAULT_LOW_MASS_THRESHOLD,
    DEFAULT_SEED,
)
from cai_judge.evaluation.gold import GoldPair
from cai_judge.evaluation.protocols import PairScores
from cai_judge.labeling.constitution import ConstitutionSpec
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.pipeline import label_pairs
from cai_judge.labeling.schema import Label, LabelOptions, Pair, PairError, Usage


@dataclass(frozen=True, slots=True)
class ScoredPair:
    gold: GoldPair
    scores: PairScores


@dataclass(frozen=True, slots=True)
class JudgeRun:
    """What one (model, constitution) said about a gold set."""

    model: str
    constitution: ConstitutionSpec
    scored: tuple[ScoredPair, ...]
    errors: tuple[PairError, ...]
    usage: Usage
    seed: int
    low_mass_threshold: float

    @property
    def label_name(self) -> str:
        return f"{self.constitution.id}@{self.constitution.version[:12]} · {self.model}"


@dataclass(frozen=True, slots=True)
class PairsRun:
    """What one (model, constitution) said about pairs with no gold (`calibrate --unlabeled`)."""

    model: str
    constitution: ConstitutionSpec
    scored: tuple[tuple[Pair, PairScores], ...]
    errors: tuple[PairError, ...]
    usage: Usage
    seed: int


def pair_scores(label: Label) -> PairScores:
    """Rebuild the label math's per-principle numbers from a label's per_principle field."""
    if label.per_principle is None:
        raise ValueError(f"label {label.id!r} has no per-principle numbers")
    return PairScores(
        pair_id=label.id,
        principles=tuple(r.to_breakdown() for r in label.per_principle),
    )


async def _score_pairs(
    judge: Judge,
    pairs: Sequence[Pair],
    constitution: ConstitutionSpec,
    options: LabelOptions,
    batch_size: int,
    on_progress: Callable[[int], None] | None,
) -> tuple[list[tuple[str, PairScores]], list[PairError], Usage]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len({p.id for p in pairs}) != len(pairs):
        # Results are matched back to pairs by id; read_gold refuses such files too.
        raise ValueError("pair ids must be unique")
    scored: list[tuple[str, PairScores]] = []
    errors: list[PairError] = []
    usage = Usage()
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = await label_pairs(judge, constitution, options, chunk)
        usage.add(batch.usage)
        for result in batch.results:
            if isinstance(result, Label):
                scored.append((result.id, pair_scores(result)))
            else:
                # Batch-relative index → file index, so the report points at the pair.
                errors.append(result.model_copy(update={"index": start + result.index}))
        if on_progress is not None:
            on_progress(len(chunk))
    return scored, errors, usage


async def score_gold(
    judge: Judge,
    gold: Sequence[GoldPair],
    constitution: ConstitutionSpec,
    *,
    seed: int = DEFAULT_SEED,
    low_mass_threshold: float = DEFAULT_LOW_MASS_THRESHOLD,
    batch_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
    cot_max_tokens: int | None = None,
    cot_max_probability: float = DEFAULT_COT_MAX_PROBABILITY,
) -> JudgeRun:
    """Label the gold pairs once with every principle and keep each principle's numbers,
    from which every protocol is derived (see `protocols`).

    With `cot_max_tokens`, the judge runs in CoT mode: the numbers kept are the clamped
    ones, which the `cot` protocol reads.
    """
    cot = cot_max_tokens is not None
    options = LabelOptions(
        per_principle=True,
        seed=seed,
        low_mass_threshold=low_mass_threshold,
        mode="cot" if cot else "plain",
        cot_max_tokens=cot_max_tokens,
        cot_max_probability=cot_max_probability,
    )
    by_id = {g.id: g for g in gold}
    scored, errors, usage = await _score_pairs(
        judge, [g.as_pair() for g in gold], constitution, options, batch_size, on_progress
    )
    return JudgeRun(
        model=judge.engine.model_name,
        constitution=constitution,
        scored=tuple(ScoredPair(by_id[pid], scores) for pid, scores in scored),
        errors=tuple(errors),
        usage=usage,
        seed=seed,
        low_mass_threshold=low_mass_threshold,
    )


async def score_unlabeled(
    judge: Judge,
    pairs: Sequence[Pair],
    constitution: ConstitutionSpec,
    *,
    seed: int = DEFAULT_SEED,
    low_mass_threshold: float = DEFAULT_LOW_MASS_THRESHOLD,
    batch_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> PairsRun:
    """As `score_gold` (plain mode), for pairs with no gold label."""
    options = LabelOptions(per_principle=True, seed=seed, low_mass_threshold=low_mass_threshold)
    by_id = {p.id: p for p in pairs}
    scored, errors, usage = await _score_pairs(
        judge, pairs, constitution, options, batch_size, on_progress
    )
    return PairsRun(
        model=judge.engine.model_name,
        constitution=constitution,
        scored=tuple((by_id[pid], scores) for pid, scores in scored),
        errors=tuple(errors),
        usage=usage,
        seed=seed,
    )


async def response_token_counts(judge: Judge, gold: Sequence[Pair]) -> dict[str, tuple[int, int]]:
    """Each pair's (tokens of response_a, tokens of response_b) with the judge's own
    tokenizer: the lengths a calibration profile's length term is fitted on."""
    counts = await judge.token_counts([t for g in gold for t in (g.response_a, g.response_b)])
    return {g.id: (counts[2 * i], counts[2 * i + 1]) for i, g in enumerate(gold)}
