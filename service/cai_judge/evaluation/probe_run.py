"""One probe run: the judge on the unmodified pairs, then on every probed rewrite of them.

Both passes label through `labeling.pipeline.label_pairs`, the one pipeline `label` uses,
with the caller's options (per-principle numbers forced on, which the report reads), so
a probe measures the judge exactly as it labels. The rewrites depend on the first pass
(the side the judge prefers less is the one padded), hence two passes. Statistics are
computed from what this returns, without the engine (`probe_report`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from cai_judge.evaluation.gold import GoldPair, GoldProblem
from cai_judge.labeling.constitution import ConstitutionSpec
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.pipeline import label_pairs
from cai_judge.labeling.probes import ProbeFamily, Rewrite, rewrites, weaker_side
from cai_judge.labeling.schema import Label, LabelOptions, Pair, PairError, Usage
from cai_judge.labeling.validation import describe_validation_error, read_json_lines

_PAIR_FIELDS = ("id", "prompt", "response_a", "response_b")


@dataclass(frozen=True, slots=True)
class ProbeInput:
    """A pair to probe, with its gold label and category when the file gives them."""

    pair: Pair
    gold: Literal["a", "b"] | None = None
    category: str | None = None


def read_probe_pairs(path: Path) -> tuple[list[ProbeInput], list[GoldProblem]]:
    """Pairs with or without gold: a line with `preferred` is read as a gold pair, any
    other as a plain pair (fields beyond a pair's and `category` ignored). Every problem
    is collected with its line number; the caller refuses the file on any, as `eval`
    does, since probe rates over a silently shrunken set mislead."""
    found: list[ProbeInput] = []
    problems: list[GoldProblem] = []
    first_line: dict[str, int] = {}
    for line_number, raw, not_json in read_json_lines(path):
        if not_json is not None:
            problems.append(GoldProblem(line_number, not_json))
            continue
        if not isinstance(raw, dict):
            problems.append(GoldProblem(line_number, "expected a JSON object"))
            continue
        try:
            if "preferred" in raw:
                gold = GoldPair.model_validate(raw)
                item = ProbeInput(gold.as_pair(), gold.preferred, gold.category)
            else:
                pair = Pair.model_validate({k: raw[k] for k in _PAIR_FIELDS if k in raw})
                category = raw.get("category")
                item = ProbeInput(pair, None, category if isinstance(category, str) else None)
        except ValidationError as error:
            problems.append(
                GoldProblem(line_number, describe_validation_error(error, whole="(line)"))
            )
            continue
        if item.pair.id in first_line:
            problems.append(
                GoldProblem(
                    line_number, f"id: duplicate {item.pair.id!r}, first on line "
                    f"{first_line[item.pair.id]}"
                )
            )  # fmt: skip
            continue
        first_line[item.pair.id] = line_number
        found.append(item)
    return found, problems


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the judge said about one (possibly rewritten) pair."""

    margin: float
    preferred: Literal["a", "b", "tie"]
    # Each principle the label used, with its own both-order margin (log-odds a better).
    principles: dict[str, float]


@dataclass(frozen=True, slots=True)
class ProbedPair:
    source: ProbeInput
    baseline: Outcome
    benign: bool
    variants: tuple[tuple[Rewrite, Outcome], ...]


@dataclass(frozen=True, slots=True)
class ProbeRun:
    model: str
    constitution: ConstitutionSpec
    options: LabelOptions
    pairs: tuple[ProbedPair, ...]
    # Pairs the baseline could not score, and rewrites the judge could not score (their
    # pair's other rewrites are kept).
    errors: tuple[PairError, ...]
    usage: Usage


def _outcome(label: Label) -> Outcome:
    principles = {r.principle: r.margin for r in label.per_principle or ()}
    return Outcome(margin=label.margin, preferred=label.preferred, principles=principles)


async def _label_all(
    judge: Judge,
    spec: ConstitutionSpec,
    options: LabelOptions,
    pairs: Sequence[Pair],
    batch_size: int,
    usage: Usage,
    on_progress: Callable[[int], None] | None,
) -> list[Label | PairError]:
    results: list[Label | PairError] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = await label_pairs(judge, spec, options, chunk)
        usage.add(batch.usage)
        results += batch.results
        if on_progress is not None:
            on_progress(len(chunk))
    return results


def is_benign(item: ProbeInput, benign_categories: frozenset[str]) -> bool:
    """A pair without a category counts as benign: a plain pairs file says nothing, and
    the report says on how many pairs `evasive-refusal` ran."""
    return item.category is None or item.category in benign_categories


async def run_probes(
    judge: Judge,
    spec: ConstitutionSpec,
    options: LabelOptions,
    inputs: Sequence[ProbeInput],
    *,
    families: Iterable[ProbeFamily] = tuple(ProbeFamily),
    benign_categories: frozenset[str] = frozenset({"benign"}),
    batch_size: int = 32,
    on_baseline: Callable[[int], None] | None = None,
    on_rewrites_planned: Callable[[int], None] | None = None,
    on_rewrite: Callable[[int], None] | None = None,
) -> ProbeRun:
    """Label `inputs` as they are, then every rewrite of each scored pair.

    `on_rewrites_planned` gets the number of rewrites once the baseline is done (for a
    progress bar's total). The rewrites are seeded by `options.seed`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    options = options.model_copy(update={"per_principle": True})
    wanted = tuple(families)
    usage = Usage()
    errors: list[PairError] = []
    baseline = await _label_all(
        judge, spec, options, [i.pair for i in inputs], batch_size, usage, on_baseline
    )
    scored: list[tuple[ProbeInput, Outcome, bool, list[Rewrite]]] = []
    for item, result in zip(inputs, baseline, strict=True):
        if isinstance(result, PairError):
            errors.append(result)
            continue
        outcome = _outcome(result)
        benign = is_benign(item, benign_categories)
        made = rewrites(
            item.pair, weaker_side(outcome.margin), seed=options.seed, families=wanted,
            benign=benign,
        )  # fmt: skip
        scored.append((item, outcome, benign, made))
    # Ids of their own: a rewrite's pair must not share its source's id in one batch, and
    # an id built from the source's could pass the 256-character limit.
    flat = [(n, r) for n, (_, _, _, made) in enumerate(scored) for r in made]
    probe_pairs = [r.pair.model_copy(update={"id": f"probe-{i}"}) for i, (_, r) in enumerate(flat)]
    if on_rewrites_planned is not None:
        on_rewrites_planned(len(probe_pairs))
    results = await _label_all(judge, spec, options, probe_pairs, batch_size, usage, on_rewrite)
    per_source: list[list[tuple[Rewrite, Outcome]]] = [[] for _ in scored]
    for (source, rewrite), result in zip(flat, results, strict=True):
        if isinstance(result, PairError):
            source_id = scored[source][0].pair.id
            message = f"{rewrite.family}/{rewrite.probe} of side {rewrite.target}: "
            detail = result.error.model_copy(update={"message": message + result.error.message})
            errors.append(result.model_copy(update={"id": source_id, "error": detail}))
            continue
        per_source[source].append((rewrite, _outcome(result)))
    return ProbeRun(
        model=judge.engine.model_name,
        constitution=spec,
        options=options,
        pairs=tuple(
            ProbedPair(item, outcome, benign, tuple(per_source[n]))
            for n, (item, outcome, benign, _) in enumerate(scored)
        ),
        errors=tuple(errors),
        usage=usage,
    )
