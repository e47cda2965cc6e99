"""SL-CAI revisions, as a use case every transport calls (CAI §3; DESIGN.md §6's edges).

The same edges as labeling, in the same order of cost: draining and rate limits before
anything is read; the counts and sampling limits (prompts, rounds, max tokens,
temperature, each refused with a 422 naming the limit) and the constitution before any
text is rendered; then the queue bound. A batch with bad prompts revises the good ones
and reports each bad one in its place.

Admission counts engine requests: one per prompt for the initial response (counted
whether or not it is given, to stay an upper bound) and two per round. A generation is
heavier than a score unit, and `max_generation_tokens` bounds how much heavier.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cai_judge.constants import DEFAULT_SEED
from cai_judge.labeling.constitution import ConstitutionNotFound, ConstitutionRegistry
from cai_judge.labeling.pipeline import validate_items
from cai_judge.labeling.schema import PairError
from cai_judge.services.admission import Admission
from cai_judge.services.errors import InvalidRequest, NotFound, RateLimited
from cai_judge.services.metrics import ServiceMetrics
from cai_judge.services.security import Caller, RateLimiter
from cai_judge.settings import Settings
from cai_judge.sl_cai.reviser import NoRevisablePrinciples, Reviser, revisable_principles
from cai_judge.sl_cai.schema import Revision, RevisionOptions, RevisionPrompt, RevisionUsage


@dataclass(frozen=True, slots=True)
class RevisionCommand:
    """A revision request, whatever wire it came on. Prompts may still be unvalidated."""

    constitution: str
    prompts: Sequence[RevisionPrompt | Mapping[str, Any]]
    rounds: int = 1
    seed: int = DEFAULT_SEED
    temperature: float = 0.0
    # None takes min(256, the service's limit).
    max_tokens: int | None = None
    few_shot: bool = True


@dataclass(frozen=True, slots=True)
class RevisionOutcome:
    """Per input prompt, in input order: its Revision or its PairError."""

    results: list[Revision | PairError]
    usage: RevisionUsage


def engine_requests(prompts: int, rounds: int) -> int:
    """Admission units of a revision request: see the module docstring."""
    return prompts * (1 + 2 * rounds)


class RevisionService:
    def __init__(
        self,
        reviser: Reviser,
        registry: ConstitutionRegistry,
        admission: Admission,
        rate_limiter: RateLimiter,
        metrics: ServiceMetrics,
        settings: Settings,
    ) -> None:
        self.reviser = reviser
        self.registry = registry
        self.admission = admission
        self.rate_limiter = rate_limiter
        self.metrics = metrics
        self.settings = settings

    async def revise(self, command: RevisionCommand, caller: Caller) -> RevisionOutcome:
        async with self.admission.enter():
            try:
                self.rate_limiter.check(caller.identity)
            except RateLimited:
                self.metrics.admission_rejections.labels(reason="rate_limit").inc()
                raise
            return await self.admission.run(self._revise(command))

    def _check_limits(self, command: RevisionCommand) -> int:
        """Refuse what is over a limit, naming it; the max tokens to use."""
        settings = self.settings
        max_tokens = command.max_tokens or min(256, settings.max_generation_tokens)
        limits = (
            ("prompts", len(command.prompts), settings.max_prompts_per_revision_request,
             "too_many_prompts", "prompts per request",
             "CAI_JUDGE_MAX_PROMPTS_PER_REVISION_REQUEST"),
            ("rounds", command.rounds, settings.max_revision_rounds,
             "too_many_rounds", "rounds", "CAI_JUDGE_MAX_REVISION_ROUNDS"),
            ("max_tokens", max_tokens, settings.max_generation_tokens,
             "max_tokens_over_limit", "tokens per generation",
             "CAI_JUDGE_MAX_GENERATION_TOKENS"),
            ("temperature", command.temperature, settings.max_temperature,
             "temperature_over_limit", "temperature", "CAI_JUDGE_MAX_TEMPERATURE"),
        )  # fmt: skip
        for param, value, limit, kind, what, setting in limits:
            if value > limit:
                raise InvalidRequest(
                    f"{param} is {value}, over this service's limit of {limit} {what} "
                    f"({setting}); send less, or split the request",
                    type=kind,
                    param=param,
                )
        return max_tokens

    async def _revise(self, command: RevisionCommand) -> RevisionOutcome:
        max_tokens = self._check_limits(command)
        try:
            spec = await asyncio.to_thread(self.registry.resolve, command.constitution)
        except ConstitutionNotFound as error:
            raise NotFound(str(error).strip("'\""), param="constitution") from None
        try:
            revisable_principles(spec)
        except NoRevisablePrinciples as error:
            raise InvalidRequest(
                str(error), type="no_revisable_principles", param="constitution"
            ) from None
        options = RevisionOptions(
            rounds=command.rounds,
            seed=command.seed,
            temperature=command.temperature,
            max_tokens=max_tokens,
            few_shot=command.few_shot,
        )
        valid, invalid = validate_items(
            command.prompts, RevisionPrompt, "prompts", "invalid_prompt"
        )
        usage = RevisionUsage()
        batch_results: list[Revision | PairError] = []
        if valid:
            units = engine_requests(len(valid), options.rounds)
            if units > self.settings.max_queued_units:
                raise InvalidRequest(
                    f"request needs {units} engine requests ({len(valid)} prompts x (1 + 2 x "
                    f"{options.rounds} rounds)), over the queue capacity of "
                    f"{self.settings.max_queued_units}; send fewer prompts or rounds",
                    type="request_too_large",
                    param="prompts",
                )
            async with self.admission.reserve(units):
                batch = await self.reviser.revise(
                    [prompt for _, prompt in valid],
                    spec,
                    options,
                    on_step=self.metrics.observe_generations,
                )
            batch_results, usage = batch.results, batch.usage
            self.metrics.observe_revisions(
                len(batch.revisions), sum(len(r.chain) for r in batch.revisions)
            )

        results: list[Revision | PairError | None] = [None] * len(command.prompts)
        for bad in invalid:
            results[bad.index] = bad
        for (index, _), result in zip(valid, batch_results, strict=True):
            if isinstance(result, PairError):
                detail = result.error.model_copy(update={"param": f"prompts.{index}"})
                result = result.model_copy(update={"index": index, "error": detail})
            results[index] = result
        return RevisionOutcome([r for r in results if r is not None], usage)
