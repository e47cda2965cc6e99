"""The one labeling pipeline: validate → plan → run → calibrate → re-index (DESIGN.md §8).

The services (`/v1/labels`, gRPC, job chunks) and the CLI (`label`, `eval`, `calibrate`)
all label through `label_pairs`, so calibration is applied in one place
(`calibrate_results`, which the export also calls) and a bad pair is reported the same
way on every front end. The services add what is theirs around it: admission, rate
limits and request limits, through the `admit` hook, which sees the plan (its real unit
and token counts) before any of it reaches the engine.

Results come back one per input pair, in input order: a `Label` or a `PairError` whose
`index` is the pair's position in the input and whose `param` names it (`pairs.<i>`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cai_judge.labeling.calibration_profile import CalibrationProfile, calibrate_label
from cai_judge.labeling.constitution import ConstitutionSpec
from cai_judge.labeling.judge import Judge, LabelPlan
from cai_judge.labeling.options import LabelOptions
from cai_judge.labeling.schema import Label, Pair, PairError, Usage
from cai_judge.labeling.validation import describe_errors

Item = TypeVar("Item", bound=BaseModel)

# Called with the plan, before the engine sees a unit: raises to refuse it (a token
# budget), and returns the context the run happens in (a reservation of its units).
Admit = Callable[[LabelPlan], AbstractAsyncContextManager[object]]


@dataclass
class LabelOutcome:
    """One result per input pair, in input order: its Label or its PairError."""

    results: list[Label | PairError]
    usage: Usage
    # Score units the plan sent, what admission counted; CoT rationale prompts generated.
    unit_count: int = 0
    rationale_prompts: int = 0

    @property
    def labels(self) -> list[Label]:
        return [r for r in self.results if isinstance(r, Label)]

    @property
    def errors(self) -> list[PairError]:
        return [r for r in self.results if isinstance(r, PairError)]


def validate_items(
    raw_items: Sequence[Item | Mapping[str, Any]],
    model: type[Item],
    field: str,
    error_type: str,
) -> tuple[list[tuple[int, Item]], list[PairError]]:
    """The valid items of a request's list `field` with their input index, and a PairError
    (naming `field.index.subfield`) for each invalid one: one bad item never fails the rest."""
    valid: list[tuple[int, Item]] = []
    invalid: list[PairError] = []
    for index, raw in enumerate(raw_items):
        if isinstance(raw, model):
            valid.append((index, raw))
            continue
        try:
            valid.append((index, model.model_validate(raw)))
        except ValidationError as error:
            message, param = describe_errors(error.errors(), prefix=(field, index))
            raw_id = raw.get("id") if isinstance(raw, Mapping) else None
            pair_id = raw_id if isinstance(raw_id, str) else None
            invalid.append(PairError.of(pair_id, index, message, type=error_type, param=param))
    return valid, invalid


def calibrate_results(
    results: Sequence[Label | PairError],
    profile: CalibrationProfile,
    token_counts: Sequence[int | None],
) -> list[Label | PairError]:
    """Each label through the profile; errors pass through. `token_counts` holds, for the
    i-th label, its responses' counts at 2i and 2i+1 (Nones when the profile has no length
    term). Raises CalibrationError when the profile was fitted for other labels."""
    position = 0
    out: list[Label | PairError] = []
    for result in results:
        if isinstance(result, Label):
            counts = token_counts[2 * position], token_counts[2 * position + 1]
            result = calibrate_label(result, profile, *counts)
            position += 1
        out.append(result)
    return out


async def _calibrate(
    judge: Judge,
    results: list[Label | PairError],
    pairs: Sequence[Pair],
    profile: CalibrationProfile,
) -> list[Label | PairError]:
    """`results[i]` is the Judge's answer for `pairs[i]`."""
    labeled = [p for r, p in zip(results, pairs, strict=True) if isinstance(r, Label)]
    counts: Sequence[int | None] = [None] * (2 * len(labeled))
    if profile.length_control:
        counts = await judge.token_counts(
            [t for p in labeled for t in (p.response_a, p.response_b)]
        )
    return calibrate_results(results, profile, counts)


async def label_pairs(
    judge: Judge,
    spec: ConstitutionSpec,
    options: LabelOptions,
    pairs: Sequence[Pair | Mapping[str, Any]],
    *,
    profile: CalibrationProfile | None = None,
    admit: Admit | None = None,
    field: str = "pairs",
    max_prompt_tokens: int | None = None,
) -> LabelOutcome:
    """Label `pairs` against `spec` with `options`; one result per pair, in input order.

    `profile`: the calibration profile to apply (chosen by the caller before any text is
    tokenized, so a request none fits is refused early). `admit`: see `Admit`; with
    `max_prompt_tokens`, planning stops past that many tokens and `admit` must refuse the
    partial plan it gets (`LabelPlan.complete`). `field` names the input list in per-pair
    errors. Raises EngineUnavailable when the engine
    cannot be reached at all, CalibrationError when the profile does not fit a label.
    """
    valid, invalid = validate_items(pairs, Pair, field, "invalid_pair")
    valid_pairs = [pair for _, pair in valid]
    plan = await judge.plan(valid_pairs, spec, options, max_prompt_tokens=max_prompt_tokens)
    reserve = admit(plan) if admit is not None else contextlib.nullcontext()
    if not plan.complete:
        raise RuntimeError("a partial plan (over max_prompt_tokens) was admitted")
    async with reserve:
        batch = await judge.run(plan)
    results = batch.results
    if profile is not None:
        results = await _calibrate(judge, results, valid_pairs, profile)
    return LabelOutcome(
        _reindex(len(pairs), valid, invalid, results, field),
        batch.usage,
        unit_count=plan.unit_count,
        rationale_prompts=len(plan.cot_prompts),
    )


def _reindex(
    count: int,
    valid: Sequence[tuple[int, Pair]],
    invalid: Sequence[PairError],
    results: Sequence[Label | PairError],
    field: str,
) -> list[Label | PairError]:
    out: list[Label | PairError | None] = [None] * count
    for bad_pair in invalid:
        out[bad_pair.index] = bad_pair
    # The Judge numbers its results within the valid pairs: back to input indices. Its
    # errors (over the context, a unit the engine refused) concern the pair as a whole.
    for (index, _), result in zip(valid, results, strict=True):
        if isinstance(result, PairError):
            detail = result.error.model_copy(update={"param": f"{field}.{index}"})
            result = result.model_copy(update={"index": index, "error": detail})
        out[index] = result
    return [r for r in out if r is not None]
