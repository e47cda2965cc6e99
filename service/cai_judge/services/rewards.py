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
- Each completion is checked for judge exploits (labeling/exploits.py: empty, punctuation
  only, a master key as the whole answer, text addressed to the evaluator); a result lists
  the reasons only when any is found, and the metric counts them by reason. With
  `exploits: floor` a flagged completion's reward becomes its group's lowest judged
  reward (0 in reference mode), raw value kept in its detail. The floor applies after
  the mean or the Bradley–Terry fit: the judge's outcomes stay as judged, so a flagged
  completion's wins still count against its opponents (a master key that beat a real
  answer lowers that answer's reward); only the flagged completion's own number is
  replaced, so it never gets an advantage over a sibling.
- `calibrated: true` (off by default, which leaves every reward as it was): each match's
  label goes through the server's calibration profile for these options before the reward
  math, as `/v1/labels` does (labeling/calibration_profile.py: margin − β̄·log(tokens_a/tokens_b),
  then 1/T), so a length-controlled profile removes the judge's preference for the longer
  completion from the rewards; the provenance names the profile, and a request no profile
  fits is refused (422 naming `calibrated`) before any engine work. The profile fitted on
  the policy's own samples (`cai-judge calibrate --unlabeled`) is the one that fits: β
  carried from other data over- or under-corrects (README, "GRPO with length control").
- A group's matches are listed by the completion shown first (`prefix_order`), so the units
  sharing the prefix prompt + that completion reach the engine together.

- Work is bounded before it is done (DESIGN.md §9, "Rewards at training scale"): the pairs
  and score units a request will create follow from its shape (each group's schedule ×
  the principles its options select × 2 orders), so a request over the limits is refused
  before a pair is rendered or tokenized. A group too large on its own is refused in its
  place when the rest fit; a request whose total is over is refused whole (422,
  `request_too_large`, with the numbers), and the SDK adapters split it.

The trainer-shaped fronts (OpenRLHF's and slime's bodies) come through `trainer_rewards`,
which keeps the three kinds of outcome apart: configuration errors and backpressure are the
HTTP errors their clients raise on and retry (never a reward: a misspelt constitution must
not train a policy on a constant); a sample the engine could not judge is a 422 naming it;
a call not judged within `trainer_reward_timeout_s` is 503 with Retry-After. No fallback
value is made up here: in reference mode without a known group no value is neutral (0.5
gives a sample an advantage over siblings scored below it), so only group assembly, which
knows the group mates, may answer one, flagged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cai_judge.labeling.constitution import ConstitutionSpec
from cai_judge.labeling.exploits import ExploitPolicy, exploit_reasons, floor_flagged
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
from cai_judge.services.errors import InvalidRequest, Unavailable
from cai_judge.services.labels import LabelService
from cai_judge.services.security import Caller

logger = logging.getLogger(__name__)

Mode = Literal["group", "reference"]
Scoring = Literal["mean", "bradley_terry"]
RewardResult = GroupRewards | ItemReward | PairError


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
    # "floor": a flagged completion gets its group's lowest reward (module docstring).
    exploits: ExploitPolicy = "flag"
    # Trainer-shaped fronts: samples whose query did not start with its prompt, found
    # left-truncated (the prompt's longest suffix that begins the query was cut off) or
    # not found at all (judged whole). Counted and logged by `trainer_rewards`.
    truncated_prompts: int = 0
    unmatched_prompts: int = 0

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


REQUEST_TOO_LARGE = "request_too_large"


def principle_count(spec: ConstitutionSpec, options: LabelOptions) -> int:
    """Principles each pair is judged on: what `select_principles` will pick."""
    count = len(spec.principle_ids)
    return count if options.k is None else min(options.k, count)


def largest_opponents(size: int, per_pair: int, max_pairs: int, max_units: int) -> int | None:
    """The largest m whose balanced schedule of a group of `size` fits the limits alone."""
    for m in range(size - 1, 0, -1):
        matches = size * m // 2
        if size * m % 2 == 0 and matches <= max_pairs and matches * per_pair <= max_units:
            return m
    return None


def _too_large(
    entry: RewardGroup | RewardItem,
    command: RewardCommand,
    pairs: int,
    per_pair: int,
    max_pairs: int,
    max_units: int,
) -> str:
    units = pairs * per_pair
    shape = f"{pairs} pairs × {per_pair // 2} principles × 2 orders"
    if isinstance(entry, RewardItem):
        return (
            f"the item needs {units} score units ({shape}), over the limit of {max_units} "
            "score units per request; send fewer principles"
        )
    size = len(entry.completions)
    best = largest_opponents(size, per_pair, max_pairs, max_units)
    fix = (
        f"send opponents: {best} or fewer (a balanced schedule), or fewer principles"
        if best is not None
        else "send fewer principles or a smaller group"
    )
    return (
        f"a group of {size} completions with opponents {command.opponents} needs {units} "
        f"score units ({shape}) over the limit of {max_units} score units and {max_pairs} "
        f"pairs per request; {fix}"
    )


class RewardService:
    def __init__(self, labels: LabelService) -> None:
        self.labels = labels
        self.metrics = labels.metrics

    async def rewards(self, command: RewardCommand, caller: Caller) -> RewardOutcome:
        """Admission and the caller's rate limit, as for labels, then the rewards."""
        async with self.labels.admission.enter():
            self.labels.check_rate(caller)
            return await self.labels.admission.run(self._rewards(command))

    async def trainer_rewards(
        self,
        command: RewardCommand,
        caller: Caller,
        *,
        route: str,
        timeout_s: float,
        param_of: Callable[[int], str],
    ) -> list[float]:
        """Reference-mode rewards for a trainer-shaped route, one per sample, or an error
        its HTTP client raises on: every ServiceError of `rewards` as it is (404, 422, 401,
        429, 503); a sample that could not be judged as 422 naming it (`param_of(index)`:
        the route's own field), or 503 when its engine was unreachable; nothing judged
        within `timeout_s` as 503 with Retry-After (module docstring: no value would be
        neutral)."""
        count = len(command.entries)
        if command.truncated_prompts or command.unmatched_prompts:
            logger.warning(
                "%s: %d of %d queries did not start with their prompt: %d left-truncated "
                "(judged without the prompt's remaining tail), %d judged whole",
                route,
                command.truncated_prompts + command.unmatched_prompts,
                count,
                command.truncated_prompts,
                command.unmatched_prompts,
            )
            self.metrics.observe_prompt_mismatches(
                route, command.truncated_prompts, command.unmatched_prompts
            )
        try:
            outcome = await asyncio.wait_for(self.rewards(command, caller), timeout_s)
        except TimeoutError:
            logger.warning("%s: %d samples not judged within %s s", route, count, timeout_s)
            self.metrics.observe_reward_timeouts(route, count)
            raise Unavailable(
                f"{count} samples not judged within this route's deadline of {timeout_s} s "
                "(CAI_JUDGE_TRAINER_REWARD_TIMEOUT_S); the judge is busy: retry later or on "
                "another replica",
                type="reward_timeout",
                retry_after_s=self.labels.settings.retry_after_s,
            ) from None
        rewards: list[float] = []
        for result in outcome.results:
            if isinstance(result, PairError):
                where = param_of(result.index)
                message = f"sample {result.index} ({where}) could not be judged: "
                if result.error.type == "engine_unavailable":
                    raise Unavailable(
                        message + result.error.message,
                        type="engine_unavailable",
                        retry_after_s=self.labels.settings.retry_after_s,
                    )
                raise InvalidRequest(
                    message + result.error.message, type=result.error.type, param=where
                )
            assert isinstance(result, ItemReward)
            rewards.append(result.reward)
        return rewards

    def _bound(
        self,
        scheduled: Sequence[tuple[int, RewardGroup | RewardItem, list[Match]]],
        spec: ConstitutionSpec,
        options: LabelOptions,
        command: RewardCommand,
    ) -> list[tuple[int, PairError]]:
        """The request's pairs and score units from its shape alone, before any text is
        rendered: an entry over the limits on its own is refused in its place (or the
        request, when no entry fits); a request whose total is over is refused whole."""
        name = command.field
        max_pairs = self.labels.settings.max_pairs_per_request
        max_units = self.labels.max_score_units
        per_pair = 2 * principle_count(spec, options)
        oversized: list[tuple[int, PairError]] = []
        total_pairs = 0
        for index, entry, matches in scheduled:
            if len(matches) <= max_pairs and len(matches) * per_pair <= max_units:
                total_pairs += len(matches)
                continue
            message = _too_large(entry, command, len(matches), per_pair, max_pairs, max_units)
            param = f"{name}.{index}" + (".completions" if isinstance(entry, RewardGroup) else "")
            oversized.append(
                (index, PairError.of(entry.id, index, message, type=REQUEST_TOO_LARGE, param=param))
            )
        if oversized and len(oversized) == len(scheduled):
            # Nothing else to judge: the request itself is refused, naming the entry.
            first = oversized[0][1].error
            raise InvalidRequest(first.message, type=REQUEST_TOO_LARGE, param=first.param)
        total_units = total_pairs * per_pair
        if total_pairs > max_pairs or total_units > max_units:
            fitting = len(scheduled) - len(oversized)
            raise InvalidRequest(
                f"{fitting} {name} make {total_pairs} pairs and {total_units} score units "
                f"({per_pair // 2} principles × 2 orders per pair), over the limit of "
                f"{max_units} score units and {max_pairs} pairs per request; send fewer "
                f"{name} per request (GET /v1/limits), or fewer principles",
                type=REQUEST_TOO_LARGE,
                param=name,
            )
        return oversized

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
        scheduled: list[tuple[int, RewardGroup | RewardItem, list[Match]]] = []
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
            scheduled.append((index, entry, matches))
        for index, refused in self._bound(scheduled, spec, options, command):
            results[index] = refused
        planned: list[_Planned] = []
        pairs: list[RewardPair] = []
        for index, entry, matches in scheduled:
            if results[index] is not None:
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
            result = _result(plan, labels, command, name)
            results[plan.index] = result
            if not isinstance(result, PairError):  # judged completions only
                self.metrics.observe_exploit_flags(
                    [r for reasons in _reasons(plan.entry) for r in reasons]
                )
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
        # Every label of a request went through the one profile `check_options` chose.
        calibration_profile=None if first.calibration is None else first.calibration.profile,
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
    reasons = _reasons(entry)
    flagged = [bool(r) for r in reasons]
    floor = command.exploits == "floor" and any(flagged)
    if isinstance(entry, RewardItem):
        label = judged[0]
        detail = (
            _detail([("reference", label.p_a, label.margin, label.consistency)])
            if command.detail
            else None
        )
        [reward] = floor_flagged([label.p_a], flagged, 0.0) if floor else [label.p_a]
        if floor and detail is not None:
            detail.raw_reward = label.p_a
        return ItemReward(
            id=entry.id,
            reward=reward,
            provenance=provenance,
            detail=detail,
            low_confidence=True if label.low_confidence else None,
            exploits=reasons[0] or None,
        )
    size = len(entry.completions)
    outcomes = [label.p_a for label in judged]
    converged: bool | None = None
    if command.scoring == "bradley_terry":
        fit = bradley_terry(size, plan.matches, outcomes)
        rewards, converged = fit.strengths, fit.converged
    else:
        rewards = mean_rewards(size, plan.matches, outcomes)
    unsure = [0] * size
    for (a, b), label in zip(plan.matches, judged, strict=True):
        if label.low_confidence:
            unsure[a] += 1
            unsure[b] += 1
    details = None
    if command.detail:
        seen: list[list[tuple[int | Literal["reference"], float, float, float]]] = [
            [] for _ in range(size)
        ]
        for (a, b), label in zip(plan.matches, judged, strict=True):
            seen[a].append((b, label.p_a, label.margin, label.consistency))
            seen[b].append((a, 1.0 - label.p_a, -label.margin, label.consistency))
        details = [_detail(matches) for matches in seen]
    if floor:
        # After the mean or the fit (module docstring): only flagged numbers change.
        raw, rewards = rewards, floor_flagged(rewards, flagged)
        for index, detail in enumerate(details or []):
            if flagged[index]:
                detail.raw_reward = raw[index]
    return GroupRewards(
        id=entry.id,
        rewards=rewards,
        provenance=provenance,
        detail=details,
        converged=converged,
        low_confidence=unsure if any(unsure) else None,
        exploits=[list(r) for r in reasons] if any(flagged) else None,
    )


def _reasons(entry: RewardGroup | RewardItem) -> list[list[str]]:
    """Each completion's exploit reasons (labeling/exploits.py), as their wire names."""
    texts = entry.completions if isinstance(entry, RewardGroup) else [entry.completion]
    return [[str(r) for r in exploit_reasons(text)] for text in texts]


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


def policy_response(text: str) -> str:
    """A decoded policy response with trailing end-of-turn and padding tokens stripped,
    repeatedly: OpenRLHF's and slime's responses alike, so one answer gets one reward
    whichever route it came by."""
    response = text
    stripped = True
    while stripped:
        stripped = False
        response = response.rstrip()
        for token in POLICY_SPECIAL_TOKENS:
            if response.endswith(token):
                response = response[: -len(token)]
                stripped = True
    return response.strip()


# A left-truncated query must still start with this much of its prompt's tail (or the
# whole query must be that tail) to be cut there: a shorter overlap is as likely chance
# ("I" ending the prompt and starting the answer) as truncation.
MIN_PROMPT_OVERLAP = 16
PromptMatch = Literal["prefix", "truncated", "unmatched"]


def prompt_overlap(prompt: str, query: str) -> int:
    """The length of the longest suffix of `prompt` that is a prefix of `query`: the
    prefix function of query + separator + prompt, in linear time."""
    head = query[: len(prompt)]
    text = head + "\x00" + prompt
    border = [0] * len(text)
    for i in range(1, len(text)):
        k = border[i - 1]
        while k and text[i] != text[k]:
            k = border[k - 1]
        if text[i] == text[k]:
            k += 1
        border[i] = k
    return min(border[-1], len(head)) if text else 0


def openrlhf_response(query: str, prompt: str) -> tuple[str, PromptMatch]:
    """The policy's response inside an OpenRLHF query (OpenRLHF decodes prompt + response
    tokens as one string) and how the prompt was found: the query minus its prompt; when
    the trainer cut the prompt from the left (max length), minus the prompt's longest
    tail the query starts with (a token cut mid-character decodes to U+FFFD, skipped);
    else the whole query, which the caller counts and logs. Trailing special tokens are
    stripped."""
    if query.startswith(prompt):
        return policy_response(query[len(prompt) :]), "prefix"
    body = query.lstrip("\ufffd")
    overlap = prompt_overlap(prompt, body)
    if overlap >= min(MIN_PROMPT_OVERLAP, len(prompt)) and overlap > 0:
        return policy_response(body[overlap:]), "truncated"
    return policy_response(query), "unmatched"
