"""Rewards for RL trainers, as a use case every transport calls (DESIGN.md §9).

Rewards are labels underneath: this turns groups (group mode) or items (reference mode) into
pairs, labels them through the one pipeline (labeling/pipeline.py) with the one options
object and the label service's own checks (the constitution, the token budget and the queue
bound on the plan's real units: the units the schedule creates), and turns the labels back
into one number per completion with the pure math of labeling/rewards.py.

- A bad group or item (schema, a schedule that cannot exist) is reported in its place; the
  others are judged. A group any of whose matches failed is reported as an error as a whole:
  a reward over a subset of its matches would not mean what the others' rewards mean.
- An empty completion is judged, not refused (labeling/reward_schema.py).
- A group's matches are listed by the completion shown first (`prefix_order`), so the units
  sharing the prefix prompt + that completion reach the engine together.

The trainer-shaped fronts (OpenRLHF's and slime's bodies) come through `reference_with_fallback`:
their clients cannot read an error in place of a reward, so a failed item gets the fallback
(0.5), counted in `cai_judge_reward_fallbacks_total` and logged, within a total timeout that
stays under the trainer's own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cai_judge.labeling.options import LabelOptions
from cai_judge.labeling.pipeline import LabelOutcome, validate_items
from cai_judge.labeling.reward_schema import (
    CompletionDetail,
    GroupRewards,
    ItemReward,
    MatchDetail,
    RewardGroup,
    RewardItem,
    RewardPair,
    RewardProvenance,
)
from cai_judge.labeling.rewards import (
    Match,
    Opponents,
    ScheduleError,
    bradley_terry,
    mean_rewards,
    schedule,
)
from cai_judge.labeling.schema import Label, PairError, Usage
from cai_judge.services.errors import InvalidRequest, ServiceError
from cai_judge.services.labels import LabelService
from cai_judge.services.security import Caller

logger = logging.getLogger(__name__)

Mode = Literal["group", "reference"]
Scoring = Literal["mean", "bradley_terry"]
RewardResult = GroupRewards | ItemReward | PairError

# What a trainer-shaped front answers for an item it could not judge: a tie, which gives no
# advantage (DESIGN.md §9).
FALLBACK_REWARD = 0.5


@dataclass(frozen=True, slots=True)
class RewardCommand:
    """A rewards request, whatever wire it came on: the one options object, the mode, and
    its groups or items (possibly unvalidated: each bad one is reported in its place)."""

    options: LabelOptions
    mode: Mode
    entries: Sequence[RewardGroup | RewardItem | Mapping[str, Any]]
    opponents: Opponents = "all"
    scoring: Scoring = "mean"
    detail: bool = False

    @property
    def field(self) -> str:
        return "groups" if self.mode == "group" else "items"


@dataclass
class RewardOutcome:
    """One result per group or item, in input order."""

    results: list[RewardResult]
    usage: Usage
    unit_count: int = 0
    errors: list[PairError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Planned:
    """Where one group's or item's pairs sit in the labeling call."""

    index: int
    entry: RewardGroup | RewardItem
    matches: list[Match]
    first_pair: int


class RewardService:
    def __init__(self, labels: LabelService) -> None:
        self.labels = labels
        self.metrics = labels.metrics

    async def rewards(self, command: RewardCommand, caller: Caller) -> RewardOutcome:
        """Admission and the caller's rate limit, as for labels, then the rewards."""
        async with self.labels.admission.enter():
            self.labels.check_rate(caller)
            return await self.labels.admission.run(self._rewards(command))

    async def reference_with_fallback(
        self, command: RewardCommand, caller: Caller, *, route: str, timeout_s: float
    ) -> tuple[list[float], int]:
        """Reference-mode rewards for a trainer that cannot read an error in place of a
        reward: a failed item, or the whole call past `timeout_s`, gets FALLBACK_REWARD,
        counted and logged. Returns the rewards and how many fell back."""
        count = len(command.entries)
        try:
            outcome = await asyncio.wait_for(self.rewards(command, caller), timeout_s)
        except (TimeoutError, ServiceError) as error:
            why = f"no answer within {timeout_s} s" if isinstance(error, TimeoutError) else error
            logger.warning("%s: every one of %d rewards fell back: %s", route, count, why)
            self.metrics.observe_reward_fallbacks(route, count)
            return [FALLBACK_REWARD] * count, count
        rewards: list[float] = []
        for result in outcome.results:
            if isinstance(result, ItemReward):
                rewards.append(result.reward)
                continue
            assert isinstance(result, PairError)
            logger.warning("%s: a reward fell back: %s", route, result.error.message)
            rewards.append(FALLBACK_REWARD)
        fell_back = sum(not isinstance(r, ItemReward) for r in outcome.results)
        self.metrics.observe_reward_fallbacks(route, fell_back)
        return rewards, fell_back

    async def _rewards(self, command: RewardCommand) -> RewardOutcome:
        name = command.field
        spec, options, profile = await self.labels.check_request(
            command.options, len(command.entries), name
        )
        model: type[RewardGroup] | type[RewardItem] = (
            RewardGroup if command.mode == "group" else RewardItem
        )
        valid, invalid = validate_items(command.entries, model, name, f"invalid_{name[:-1]}")
        results: list[RewardResult | None] = [None] * len(command.entries)
        for error in invalid:
            results[error.index] = error
        planned: list[_Planned] = []
        pairs: list[RewardPair] = []
        for index, entry in valid:
            try:
                matches = _matches(entry, command.opponents, options.seed)
            except ScheduleError as error:
                param = (
                    f"{name}.{index}.completions" if error.param == "completions" else (error.param)
                )
                results[index] = PairError.of(
                    entry.id, index, str(error), type="invalid_schedule", param=param
                )
                continue
            planned.append(_Planned(index, entry, matches, len(pairs)))
            pairs.extend(_pairs(index, entry, matches))
        try:
            # Nothing valid to judge (every entry refused, or OpenRLHF's empty lists): no
            # engine call, the errors in place.
            outcome = (
                await self.labels.label_checked(spec, options, pairs, profile=profile)
                if pairs
                else LabelOutcome([], Usage())
            )
        except InvalidRequest as error:
            if error.param != "pairs":
                raise
            # The budget counted the pairs the schedule made of these groups or items.
            raise InvalidRequest(
                error.message.replace("fewer or shorter pairs", f"fewer or shorter {name}"),
                type=error.type,
                param=name,
            ) from None
        for plan in planned:
            labels = outcome.results[plan.first_pair : plan.first_pair + len(plan.matches)]
            results[plan.index] = _result(plan, labels, command, name)
        final = [r for r in results if r is not None]
        errors = [r for r in final if isinstance(r, PairError)]
        self.metrics.observe_rewards(
            command.mode,
            len(final) - len(errors),
            len(errors),
            sum(isinstance(r, PairError) for r in outcome.results),
        )
        return RewardOutcome(final, outcome.usage, outcome.unit_count, errors)


def _matches(entry: RewardGroup | RewardItem, opponents: Opponents, seed: int) -> list[Match]:
    if isinstance(entry, RewardItem):
        return [(0, 1)]  # the completion (0) as a against the reference (1)
    return schedule(len(entry.completions), opponents, seed)


def _pairs(index: int, entry: RewardGroup | RewardItem, matches: list[Match]) -> list[RewardPair]:
    """One pair per match; `matches` are listed by first completion (labeling/rewards.py),
    so pairs sharing the prefix prompt + that completion are adjacent."""
    texts = (
        entry.completions if isinstance(entry, RewardGroup) else [entry.completion, entry.reference]
    )
    return [
        RewardPair(
            id=f"{index}:{a}-{b}", prompt=entry.prompt, response_a=texts[a], response_b=texts[b]
        )
        for a, b in matches
    ]


def _provenance(labels: Sequence[Label]) -> RewardProvenance:
    first = labels[0]
    principles = sorted({p for label in labels for p in label.principles})
    return RewardProvenance(
        model=first.model,
        constitution=first.constitution,
        template=first.template,
        principles=principles,
        seed=first.seed,
        aggregator=str(first.aggregator),
    )


def _result(
    plan: _Planned, labels: Sequence[Label | PairError], command: RewardCommand, name: str
) -> RewardResult:
    entry = plan.entry
    failed = [r for r in labels if isinstance(r, PairError)]
    if failed:
        return PairError.of(
            entry.id,
            plan.index,
            f"{len(failed)} of {len(labels)} matches could not be judged: "
            f"{failed[0].error.message}",
            type=failed[0].error.type,
            param=f"{name}.{plan.index}",
        )
    judged = [r for r in labels if isinstance(r, Label)]
    provenance = _provenance(judged)
    if isinstance(entry, RewardItem):
        label = judged[0]
        detail = (
            _detail([("reference", label.p_a, label.margin, label.consistency)])
            if command.detail
            else None
        )
        return ItemReward(id=entry.id, reward=label.p_a, provenance=provenance, detail=detail)
    size = len(entry.completions)
    outcomes = [label.p_a for label in judged]
    if command.scoring == "bradley_terry":
        rewards = bradley_terry(size, plan.matches, outcomes).strengths
    else:
        rewards = mean_rewards(size, plan.matches, outcomes)
    details = None
    if command.detail:
        seen: list[list[tuple[int | Literal["reference"], float, float, float]]] = [
            [] for _ in range(size)
        ]
        for (a, b), label in zip(plan.matches, judged, strict=True):
            seen[a].append((b, label.p_a, label.margin, label.consistency))
            seen[b].append((a, 1.0 - label.p_a, -label.margin, label.consistency))
        details = [_detail(matches) for matches in seen]
    return GroupRewards(id=entry.id, rewards=rewards, provenance=provenance, detail=details)


def _detail(
    matches: Sequence[tuple[int | Literal["reference"], float, float, float]],
) -> CompletionDetail:
    count = max(len(matches), 1)
    return CompletionDetail(
        matches=[
            MatchDetail(opponent=o, outcome=p, margin=m, consistency=c) for o, p, m, c in matches
        ],
        mean_margin=sum(m for _, _, m, _ in matches) / count,
        consistency=sum(c for _, _, _, c in matches) / count,
    )


# -- trainer-shaped fronts (pure) ----------------------------------------------------------

# End-of-text and turn markers a policy's decoded query may still carry (OpenRLHF decodes
# with skip_special_tokens=False): stripped from the response's end, repeatedly.
POLICY_SPECIAL_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end▁of▁sentence|>",
    "</s>",
    "<pad>",
    "<|pad|>",
)


def openrlhf_response(query: str, prompt: str) -> str:
    """The policy's response inside an OpenRLHF query: the query minus its prompt (OpenRLHF
    decodes prompt + response tokens as one string), trailing special tokens stripped."""
    response = query[len(prompt) :] if query.startswith(prompt) else query
    stripped = True
    while stripped:
        stripped = False
        response = response.rstrip()
        for token in POLICY_SPECIAL_TOKENS:
            if response.endswith(token):
                response = response[: -len(token)]
                stripped = True
    return response.strip()
