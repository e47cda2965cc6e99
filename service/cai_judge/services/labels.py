"""Labeling pairs, as a use case every transport calls (DESIGN.md §2, §6).

Checks run in the order of their cost, so a request is refused as early as it can be:
draining and rate limits, then the pair count and constitution, then the token budget and
queue bound after rendering but before the engine. The labeling itself is the pipeline's
(labeling/pipeline.py), shared with the CLI; this adds admission and the request limits.
`calibrated: true` picks the profile before any text is tokenized, or refuses with 422.

The reasoning at length: docs/internals.md, section "services/labels.py".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from cai_judge.constants import DEFAULT_COT_TOKENS
from cai_judge.engine.base import EngineUnavailable
from cai_judge.labeling.calibration_profile import (
    CalibrationError,
    CalibrationProfile,
    ProfileKey,
    ProfileMismatch,
    ProfileSet,
)
from cai_judge.labeling.constitution import (
    ConstitutionNotFound,
    ConstitutionRegistry,
    ConstitutionSpec,
)
from cai_judge.labeling.judge import Judge, LabelPlan
from cai_judge.labeling.options import LabelOptions
from cai_judge.labeling.pipeline import LabelOutcome, label_pairs
from cai_judge.labeling.schema import Pair
from cai_judge.services.admission import Admission
from cai_judge.services.errors import InvalidRequest, NotFound, RateLimited, Unavailable
from cai_judge.services.metrics import ServiceMetrics
from cai_judge.services.security import Caller, RateLimiter
from cai_judge.settings import Settings


@dataclass(frozen=True, slots=True)
class LabelCommand:
    """A labeling request, whatever wire it came on: the one options object and the pairs,
    which may still be unvalidated (the pipeline reports each bad one in its place)."""

    options: LabelOptions
    pairs: Sequence[Pair | Mapping[str, Any]]


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
        self, options: LabelOptions
    ) -> tuple[ConstitutionSpec, LabelOptions, CalibrationProfile | None]:
        """Every check of the options that needs no pair: the constitution, the CoT limit,
        and calibration (a fitting profile, plain mode). /v1/labels, gRPC and job
        submission all call this one function (DESIGN.md §5), so a job is refused at
        submit for exactly what would make each of its chunks fail. Returns the options
        as the Judge takes them: the CoT budget resolved and the server's tuning set."""
        settings = self.settings
        if options.constitution is None:
            raise InvalidRequest(
                "constitution is required: `id` or `id@version`", param="constitution"
            )
        try:
            spec = self.registry.resolve(options.constitution)
        except ConstitutionNotFound as error:
            raise NotFound(str(error).strip("'\""), param="constitution") from None
        cot_max_tokens = options.cot_max_tokens or min(DEFAULT_COT_TOKENS, settings.max_cot_tokens)
        if cot_max_tokens > settings.max_cot_tokens:
            raise InvalidRequest(
                f"cot_max_tokens is {cot_max_tokens}, over this service's limit of "
                f"{settings.max_cot_tokens} rationale tokens; ask for fewer",
                type="cot_tokens_over_limit",
                param="cot_max_tokens",
            )
        if options.calibrated and options.mode == "cot":
            # Profiles are fitted on plain labels (`cai-judge calibrate` scores plain
            # units); a CoT label's probabilities are clamped to cot_max_probability and
            # come from another template version, so no profile describes them. Refused
            # before any engine work, never answered 500 after it.
            raise InvalidRequest(
                "calibrated labels are for mode plain only: calibration profiles are fitted "
                "on plain labels, and CoT probabilities are clamped; send calibrated: false "
                "or mode: plain",
                type="calibration_unavailable",
                param="calibrated",
            )
        resolved = options.tuned(
            low_mass_threshold=settings.low_mass_threshold,
            cot_max_probability=settings.cot_max_probability,
        ).model_copy(update={"cot_max_tokens": cot_max_tokens})
        profile = self._profile(spec, resolved) if options.calibrated else None
        return spec, resolved, profile

    async def _label(self, command: LabelCommand) -> LabelOutcome:
        spec, options, profile = await self.check_request(
            command.options, len(command.pairs), "pairs"
        )
        return await self.label_checked(spec, options, command.pairs, profile=profile)

    @property
    def max_score_units(self) -> int:
        """Score units one request may bring: the setting, at most the queue capacity (a
        request over the capacity could never be admitted)."""
        settings = self.settings
        return min(
            settings.max_score_units_per_request or settings.max_queued_units,
            settings.max_queued_units,
        )

    async def check_request(
        self, options: LabelOptions, count: int, field: str
    ) -> tuple[ConstitutionSpec, LabelOptions, CalibrationProfile | None]:
        """What every labeling request checks before its first pair, whatever it carries
        (`field`: pairs, or a rewards request's groups or items): its count against the
        per-request limit, then its options."""
        limit = self.settings.max_pairs_per_request
        if count > limit:
            raise InvalidRequest(
                f"{count} {field}, over the limit of {limit} per request",
                type=f"too_many_{field}",
                param=field,
            )
        # In a thread: a registry shared through Redis blocks on the network.
        return await asyncio.to_thread(self.check_options, options)

    async def label_checked(
        self,
        spec: ConstitutionSpec,
        options: LabelOptions,
        pairs: Sequence[Pair | Mapping[str, Any]],
        *,
        profile: CalibrationProfile | None = None,
    ) -> LabelOutcome:
        """Pairs whose options `check_options` resolved, through the pipeline under this
        service's token budget and queue bound: what /v1/labels does after its own checks,
        and what the rewards path (services/rewards.py) runs its scheduled pairs through."""
        settings = self.settings
        try:
            outcome = await label_pairs(
                self.judge,
                spec,
                options,
                pairs,
                profile=profile,
                admit=self._admit,
                max_prompt_tokens=self.settings.max_tokens_per_request,
            )
        except EngineUnavailable as error:
            # A remote fleet with no server up: retry later or elsewhere (503).
            raise Unavailable(
                f"{error}; retry later",
                type="engine_unavailable",
                retry_after_s=settings.retry_after_s,
            ) from None
        except CalibrationError as error:  # a domain ValueError is never a 500
            raise InvalidRequest(
                f"{error}; send calibrated: false",
                type="calibration_mismatch",
                param="calibrated",
            ) from None
        self.metrics.observe_labels(outcome.labels, outcome.usage)
        if options.mode == "cot":
            self.metrics.observe_rationales(outcome.rationale_prompts)
        return outcome

    def _admit(self, plan: LabelPlan) -> AbstractAsyncContextManager[object]:
        """The request's limits on its real counts, then a reservation of its units."""
        limit = self.settings.max_tokens_per_request
        if plan.prompt_tokens > limit or not plan.complete:
            # A partial plan stopped rendering at the budget: its counts are a floor.
            more = "" if plan.complete else "more than "
            raise InvalidRequest(
                f"request renders to {more}{plan.prompt_tokens} prompt tokens over "
                f"{more}{plan.unit_count} score units, over the limit of {limit} tokens per "
                "request; send fewer or shorter pairs, or fewer principles",
                type="request_too_large",
                param="pairs",
            )
        return self.admission.reserve(plan.unit_count)

    def _profile(self, spec: ConstitutionSpec, options: LabelOptions) -> CalibrationProfile:
        if self.profiles is None:
            raise InvalidRequest(
                "calibrated labels need calibration profiles, and this server has none: set "
                "CAI_JUDGE_CALIBRATION_DIR to a folder of `cai-judge calibrate` profiles, or "
                "send calibrated: false",
                type="calibration_unavailable",
                param="calibrated",
            )
        version = self.judge.renderer(spec.template).version
        wanted = ProfileKey.for_labels(self.judge.engine.model_name, spec, version, options)
        try:
            return self.profiles.select(wanted)
        except ProfileMismatch as error:
            raise InvalidRequest(
                f"{error}; send calibrated: false, or fit a profile for this request with "
                "`cai-judge calibrate`",
                type="calibration_mismatch",
                param="calibrated",
            ) from None
