"""Labeling pairs, as a use case every transport calls (DESIGN.md §2, §6).

The order of the checks is the order of their cost, so a request is refused as early as
it can be: draining and rate limits before anything is read; the pair count and the
constitution before any text is tokenized; the token budget and the queue bound after
rendering (done off the event loop by the Judge) but before the engine sees a unit.

A batch with bad pairs labels the good ones and reports each bad one in its place.

`calibrated: true` maps each label through the calibration profile fitted for exactly this
model, template version, constitution version, aggregator and principle selection (issue 15,
labeling/calibration.py); the profile is chosen before any text is tokenized, and a request
no profile fits is refused with 422 naming what differs, never labeled with a wrong one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from cai_judge.engine.base import EngineUnavailable
from cai_judge.labeling.calibration import (
    CalibrationError,
    CalibrationProfile,
    ProfileKey,
    ProfileMismatch,
    ProfileSet,
    calibrate_label,
)
from cai_judge.labeling.constitution import (
    ConstitutionNotFound,
    ConstitutionRegistry,
    ConstitutionSpec,
)
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.schema import (
    ConstitutionRef,
    Label,
    LabelOptions,
    Pair,
    PairError,
    TemplateRef,
    Usage,
)
from cai_judge.labeling.validation import describe_errors
from cai_judge.services.admission import Admission
from cai_judge.services.errors import InvalidRequest, NotFound, RateLimited, Unavailable
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
    calibrated: bool = False
    mode: Literal["plain", "cot"] = "plain"
    # CoT mode: rationale tokens per (principle, order); None takes the service's limit.
    cot_max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class LabelOutcome:
    """Per input pair, in input order: its Label or its PairError."""

    results: list[Label | PairError]
    usage: Usage


Item = TypeVar("Item", bound=BaseModel)


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
        # Loaded once: a bad profile file is a start-up error, not a surprise per request.
        self.profiles = (
            ProfileSet.from_dir(settings.calibration_dir) if settings.calibration_dir else None
        )

    def check_rate(self, caller: Caller) -> None:
        """One hit of the caller's rate limit: a label call, or a whole gRPC stream."""
        try:
            self.rate_limiter.check(caller.identity)
        except RateLimited:
            self.metrics.admission_rejections.labels(reason="rate_limit").inc()
            raise

    async def label(
        self, command: LabelCommand, caller: Caller, *, rate_checked: bool = False
    ) -> LabelOutcome:
        """`rate_checked`: the caller's rate limit was already hit for this work (a gRPC
        stream is one call however many groups of pairs it labels)."""
        async with self.admission.enter():
            if not rate_checked:
                self.check_rate(caller)
            return await self.admission.run(self._label(command))

    async def label_admitted(self, command: LabelCommand) -> LabelOutcome:
        """Label work admitted elsewhere (a job's chunk, admitted when the job was
        submitted): the same checks, limits and errors, without the caller's rate limit."""
        async with self.admission.enter():
            return await self.admission.run(self._label(command))

    def check_options(
        self, command: LabelCommand
    ) -> tuple[ConstitutionSpec, LabelOptions, CalibrationProfile | None]:
        """Every check of a command's options that needs no pair: the constitution, the
        CoT limit, and calibration (a fitting profile, plain mode). /v1/labels, gRPC and
        job submission all call this one function (DESIGN.md §5), so a job is refused at
        submit for exactly what would make each of its chunks fail."""
        settings = self.settings
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
        if command.calibrated and command.mode == "cot":
            # Profiles are fitted on plain labels (`cai-judge calibrate` scores plain
            # units); a CoT label's probabilities are clamped to cot_max_probability and
            # come from another template version, so no profile describes them. Refused
            # before any engine work, never answered 500 after it (issue 19).
            raise InvalidRequest(
                "calibrated labels are for mode plain only: calibration profiles are fitted "
                "on plain labels, and CoT probabilities are clamped; send calibrated: false "
                "or mode: plain",
                type="calibration_unavailable",
                param="calibrated",
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
        profile = self._profile(spec, options) if command.calibrated else None
        return spec, options, profile

    async def _label(self, command: LabelCommand) -> LabelOutcome:
        settings = self.settings
        if len(command.pairs) > settings.max_pairs_per_request:
            raise InvalidRequest(
                f"{len(command.pairs)} pairs, over the limit of "
                f"{settings.max_pairs_per_request} per request",
                type="too_many_pairs",
                param="pairs",
            )
        # In a thread: a registry shared through Redis blocks on the network.
        spec, options, profile = await asyncio.to_thread(self.check_options, command)
        valid, invalid = validate_items(command.pairs, Pair, "pairs", "invalid_pair")
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
            try:
                batch = await self.judge.run(plan)
            except EngineUnavailable as error:
                # A remote fleet with no server up: retry later or elsewhere (503).
                raise Unavailable(
                    f"{error}; retry later",
                    type="engine_unavailable",
                    retry_after_s=settings.retry_after_s,
                ) from None
        if profile is not None:
            try:
                batch.results = await self._calibrate(
                    batch.results, [pair for _, pair in valid], profile
                )
            except CalibrationError as error:  # a domain ValueError is never a 500
                raise InvalidRequest(
                    f"{error}; send calibrated: false",
                    type="calibration_mismatch",
                    param="calibrated",
                ) from None
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

    def _profile(self, spec: ConstitutionSpec, options: LabelOptions) -> CalibrationProfile:
        if self.profiles is None:
            raise InvalidRequest(
                "calibrated labels need calibration profiles, and this server has none: set "
                "CAI_JUDGE_CALIBRATION_DIR to a folder of `cai-judge calibrate` profiles, or "
                "send calibrated: false",
                type="calibration_unavailable",
                param="calibrated",
            )
        wanted = ProfileKey(
            model=self.judge.engine.model_name,
            template=TemplateRef(
                id=spec.template, version=self.judge.renderer(spec.template).version
            ),
            constitution=ConstitutionRef(id=spec.id, version=spec.version),
            aggregator=options.aggregator,
            selection=options.principles,
        )
        try:
            return self.profiles.select(wanted)
        except ProfileMismatch as error:
            raise InvalidRequest(
                f"{error}; send calibrated: false, or fit a profile for this request with "
                "`cai-judge calibrate`",
                type="calibration_mismatch",
                param="calibrated",
            ) from None

    async def _calibrate(
        self,
        results: list[Label | PairError],
        pairs: list[Pair],
        profile: CalibrationProfile,
    ) -> list[Label | PairError]:
        """`results[i]` is the Judge's answer for `pairs[i]`; errors pass through."""
        labeled = [(r, p) for r, p in zip(results, pairs, strict=True) if isinstance(r, Label)]
        counts: list[int | None] = [None] * (2 * len(labeled))
        if profile.length_control:
            texts = [t for _, pair in labeled for t in (pair.response_a, pair.response_b)]
            counts = list(await self.judge.token_counts(texts))
        calibrated = iter(
            calibrate_label(label, profile, counts[2 * i], counts[2 * i + 1])
            for i, (label, _) in enumerate(labeled)
        )
        return [next(calibrated) if isinstance(r, Label) else r for r in results]
