"""Labeling pairs, as a use case every transport calls (DESIGN.md §2, §6).

The order of the checks is the order of their cost, so a request is refused as early as
it can be: draining and rate limits before anything is read; the pair count and the
constitution before any text is tokenized; the token budget and the queue bound after
rendering (done off the event loop by the Judge) but before the engine sees a unit.

A batch with bad pairs labels the good ones and reports each bad one in its place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from cai_judge.labeling.constitution import ConstitutionNotFound, ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.schema import Label, LabelOptions, Pair, PairError, Usage
from cai_judge.labeling.validation import describe_errors
from cai_judge.services.admission import Admission
from cai_judge.services.errors import InvalidRequest, NotFound, RateLimited
from cai_judge.services.metrics import ServiceMetrics
from cai_judge.services.security import Caller, RateLimiter
from cai_judge.settings import Settings


@dataclass(frozen=True, slots=True)
class LabelCommand:
    """A labeling request, whatever wire it came on. Pairs may still be unvalidated."""

    constitution: str
    pairs: Sequence[Pair | Mapping[str, Any]]
    principles: int | Literal["all"] = "all"
    seed: int = 0
    aggregator: Aggregator = Aggregator.MEAN_LOGODDS
    per_principle: bool = False
    mode: Literal["plain", "cot"] = "plain"
    # CoT mode: rationale tokens per (principle, order); None takes the service's limit.
    cot_max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class LabelOutcome:
    """Per input pair, in input order: its Label or its PairError."""

    results: list[Label | PairError]
    usage: Usage


def validate_pairs(
    raw_pairs: Sequence[Pair | Mapping[str, Any]],
) -> tuple[list[tuple[int, Pair]], list[PairError]]:
    """The valid pairs with their input index, and a PairError for each invalid one."""
    valid: list[tuple[int, Pair]] = []
    invalid: list[PairError] = []
    for index, raw in enumerate(raw_pairs):
        if isinstance(raw, Pair):
            valid.append((index, raw))
            continue
        try:
            valid.append((index, Pair.model_validate(raw)))
        except ValidationError as error:
            message, param = describe_errors(error.errors(), prefix=("pairs", index))
            raw_id = raw.get("id")
            invalid.append(
                PairError.of(
                    raw_id if isinstance(raw_id, str) else None, index, message, param=param
                )
            )
    return valid, invalid


class LabelService:
    def __init__(
        self,
        judge: Judge,
        registry: ConstitutionRegistry,
        admission: Admission,
        rate_limiter: RateLimiter,
        metrics: ServiceMetrics,
        settings: Settings,
    ) -> None:
        self.judge = judge
        self.registry = registry
        self.admission = admission
        self.rate_limiter = rate_limiter
        self.metrics = metrics
        self.settings = settings

    async def label(self, command: LabelCommand, caller: Caller) -> LabelOutcome:
        async with self.admission.enter():
            try:
                self.rate_limiter.check(caller.identity)
            except RateLimited:
                self.metrics.admission_rejections.labels(reason="rate_limit").inc()
                raise
            return await self.admission.run(self._label(command))

    async def _label(self, command: LabelCommand) -> LabelOutcome:
        settings = self.settings
        if len(command.pairs) > settings.max_pairs_per_request:
            raise InvalidRequest(
                f"{len(command.pairs)} pairs, over the limit of "
                f"{settings.max_pairs_per_request} per request",
                type="too_many_pairs",
                param="pairs",
            )
        try:
            spec = self.registry.resolve(command.constitution)
        except ConstitutionNotFound as error:
            raise NotFound(str(error).strip("'\""), param="constitution") from None
        cot_max_tokens = command.cot_max_tokens or min(128, settings.max_cot_tokens)
        if cot_max_tokens > settings.max_cot_tokens:
            raise InvalidRequest(
                f"cot_max_tokens is {cot_max_tokens}, over this service's limit of "
                f"{settings.max_cot_tokens} rationale tokens; ask for fewer",
                type="cot_tokens_over_limit",
                param="cot_max_tokens",
            )
        options = LabelOptions(
            principles=command.principles,
            seed=command.seed,
            aggregator=command.aggregator,
            per_principle=command.per_principle,
            low_mass_threshold=settings.low_mass_threshold,
            mode=command.mode,
            cot_max_tokens=cot_max_tokens,
            cot_max_probability=settings.cot_max_probability,
        )
        valid, invalid = validate_pairs(command.pairs)
        plan = await self.judge.plan([pair for _, pair in valid], spec, options)
        if plan.prompt_tokens > settings.max_tokens_per_request:
            raise InvalidRequest(
                f"request renders to {plan.prompt_tokens} prompt tokens over "
                f"{plan.unit_count} score units, over the limit of "
                f"{settings.max_tokens_per_request} tokens per request; send fewer or "
                "shorter pairs, or fewer principles",
                type="request_too_large",
                param="pairs",
            )
        async with self.admission.reserve(plan.unit_count):
            batch = await self.judge.run(plan)
        self.metrics.observe_labels(batch.labels, batch.usage)
        if options.mode == "cot":
            self.metrics.observe_rationales(len(plan.cot_prompts))

        results: list[Label | PairError | None] = [None] * len(command.pairs)
        for bad_pair in invalid:
            results[bad_pair.index] = bad_pair
        # The Judge numbers its results within the valid pairs: back to input indices. Its
        # errors (over the context, a unit the engine refused) concern the pair as a whole.
        for (index, _), result in zip(valid, batch.results, strict=True):
            if isinstance(result, PairError):
                detail = result.error.model_copy(update={"param": f"pairs.{index}"})
                result = result.model_copy(update={"index": index, "error": detail})
            results[index] = result
        return LabelOutcome([r for r in results if r is not None], batch.usage)
