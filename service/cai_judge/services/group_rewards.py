"""Group rewards for one-sample trainers (DESIGN.md §9, "Group rewards for one-sample trainers").

OpenRLHF (its `n_samples_per_prompt` samples), verl's reward loop and slime's remote RM ask for
one sample's reward per call, but a constitution judges a group best against itself. With a
group size G, the server holds each sample until its group has arrived or a short wait passes,
judges the group once, and answers each sample with its own slot's reward. The samples of one
group may reach different replicas, so the group lives in a store every replica sees
(store/groups.py: Redis, or this process for the embedded default). The protocol:

- A sample joins the open group of its scope (the caller, the options, G and the group key:
  the trainer's own key where it has one, else the prompt) atomically and learns its slot.
- The sample that fills the group to G, or else the first waiter whose wait runs out, wins the
  group's judge lock (SET NX), closes the group (later samples open a new one), reads exactly
  its members and judges them with one RewardService call; every slot's result is published
  at once and every waiter answers with its own.
- A partial group (the wait ran out with 2..G-1 members) is judged as a smaller group; a group
  of one is judged against its label (reference mode) if it has one, else it falls back, flagged.
- The judgement runs in its own task, so the judging request's client leaving does not strand
  the group; a judge that dies outright (its replica killed) strands nobody forever either: a
  waiter that sees no result within wait + judge timeout + grace answers 503 with Retry-After.
  OpenRLHF's client retries 5 times and slime's 10, and a retried sample joins a new group.
  Never a silent 0.5.
- Configuration errors (an unknown constitution, a bad option) fail the call loudly, before the
  sample joins a group when they can be seen then, and in every slot when the judge meets them;
  backpressure (queue full, rate limit) reaches every waiter as the same 503/429.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cai_judge.labeling.exploits import ExploitPolicy
from cai_judge.labeling.options import LabelOptions
from cai_judge.labeling.reward_schema import GroupRewards, ItemReward
from cai_judge.labeling.rewards import Opponents
from cai_judge.services import errors as service_errors
from cai_judge.services.errors import InvalidRequest, ServiceError, Unavailable
from cai_judge.services.rewards import RewardCommand, RewardService, Scoring
from cai_judge.services.security import Caller
from cai_judge.settings import Settings
from cai_judge.store.errors import StoreUnavailable
from cai_judge.store.groups import GroupStore, Joined, MemoryGroupStore, RedisGroupStore

logger = logging.getLogger(__name__)

# A slot's result on the wire between replicas: what judged it, or the error every slot shares.
SlotResult = dict[str, Any]
Judge = Callable[[list[dict[str, Any]]], Awaitable[list[SlotResult]]]
How = Literal["group", "reference", "fallback"]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def error_result(error: ServiceError) -> SlotResult:
    return {
        "error": {
            "class": type(error).__name__,
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "retry_after_s": error.retry_after_s,
        }
    }


def raise_error(result: SlotResult) -> None:
    """Re-raise, on the waiter's replica, the typed error the judge met: the same status and
    envelope as if this replica had judged."""
    error = result.get("error")
    if error is None:
        return
    cls = getattr(service_errors, str(error.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, ServiceError)):
        cls = Unavailable
    raise cls(
        str(error.get("message")),
        type=error.get("type"),
        param=error.get("param"),
        retry_after_s=error.get("retry_after_s"),
    )


class GroupAssembler:
    """Holds samples until their group is whole (or its wait ran out) and has the group judged
    once, over a GroupStore every replica shares. `judgements` counts the groups this process
    judged (the tests count one per group across replicas)."""

    def __init__(self, store: GroupStore, *, grace_s: float, retry_after_s: int) -> None:
        self.store = store
        self.grace_s = grace_s
        self.retry_after_s = retry_after_s
        self.owner = uuid.uuid4().hex
        self.judgements = 0
        self._tasks: set[asyncio.Task[list[SlotResult]]] = set()

    def _ttl_s(self, wait_s: float, judge_timeout_s: float) -> int:
        return math.ceil(wait_s + judge_timeout_s + 2 * self.grace_s) + 60

    async def submit(
        self,
        scope: str,
        member: Mapping[str, Any],
        *,
        size: int,
        wait_s: float,
        judge: Judge,
        judge_timeout_s: float,
    ) -> SlotResult:
        """This member's slot result. Raises Unavailable (retryable) when its group's judge
        published nothing in time, StoreUnavailable when the store cannot be reached."""
        loop = asyncio.get_running_loop()
        ttl_s = self._ttl_s(wait_s, judge_timeout_s)
        joined = await self.store.join(scope, uuid.uuid4().hex, _dumps(dict(member)), size, ttl_s)
        wait_until = loop.time() + wait_s
        result_until = wait_until + judge_timeout_s + self.grace_s
        claimed = False
        if joined.count >= size:
            claimed = True  # it filled the group: no wait left to spend
            if await self.store.claim(joined.group_id, self.owner, ttl_s):
                return await self._judged(scope, joined, judge, judge_timeout_s, ttl_s)
        while True:
            until = result_until if claimed else wait_until
            raw = await self.store.wait_results(joined.group_id, until - loop.time())
            if raw is not None:
                return self._slot(json.loads(raw), joined.slot, joined.group_id)
            if not claimed:
                claimed = True
                if await self.store.claim(joined.group_id, self.owner, ttl_s):
                    return await self._judged(scope, joined, judge, judge_timeout_s, ttl_s)
                continue
            raise Unavailable(
                f"the group this sample joined was not judged within "
                f"{wait_s + judge_timeout_s + self.grace_s:.0f} s (the replica judging it may "
                "have stopped): retry the sample, it will join a new group",
                type="group_not_judged",
                retry_after_s=self.retry_after_s,
            )

    def _slot(self, results: list[SlotResult], slot: int, group_id: str) -> SlotResult:
        if slot >= len(results):  # cannot happen while join and close stay atomic
            raise Unavailable(
                f"group {group_id} was judged without this sample: retry it",
                type="group_not_judged",
                retry_after_s=self.retry_after_s,
            )
        return results[slot]

    async def _judged(
        self, scope: str, joined: Joined, judge: Judge, judge_timeout_s: float, ttl_s: int
    ) -> SlotResult:
        # Its own task: if this request is cancelled (its client left), the group's other
        # samples still get their results.
        task = asyncio.create_task(
            self._judge(scope, joined.group_id, judge, judge_timeout_s, ttl_s)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        results = await asyncio.shield(task)
        return self._slot(results, joined.slot, joined.group_id)

    async def _judge(
        self, scope: str, group_id: str, judge: Judge, judge_timeout_s: float, ttl_s: int
    ) -> list[SlotResult]:
        members = [json.loads(raw) for raw in await self.store.close(scope, group_id)]
        try:
            # The judge bounds itself (a fallback past its timeout); this bound is for one
            # that does not, so the judging request never outlives its waiters.
            results = await asyncio.wait_for(judge(members), judge_timeout_s + self.grace_s)
        except TimeoutError:
            results = [
                error_result(
                    Unavailable(
                        f"the group was not judged within {judge_timeout_s + self.grace_s:.0f} s:"
                        " retry",
                        type="group_not_judged",
                        retry_after_s=self.retry_after_s,
                    )
                )
            ] * len(members)
        except ServiceError as error:
            results = [error_result(error)] * len(members)
        except Exception as error:  # a bug or an engine failure: retryable, never a reward
            logger.exception("group %s: judging %d samples failed", group_id, len(members))
            results = [
                error_result(
                    Unavailable(
                        f"the group could not be judged ({type(error).__name__}): retry",
                        type="group_judge_failed",
                        retry_after_s=self.retry_after_s,
                    )
                )
            ] * len(members)
        self.judgements += 1
        try:
            await self.store.publish(group_id, _dumps(results), ttl_s)
        except StoreUnavailable:
            # The judge's own sample still has its answer; the others time out into a 503.
            logger.warning("group %s: results not published: the store is unreachable", group_id)
        return results


@dataclass(frozen=True, slots=True)
class GroupSample:
    """One trainer sample: its prompt, the policy's completion, the dataset's label (the
    reference for a group of one), and the trainer's group key, if it has one."""

    prompt: str | list[dict[str, Any]]
    completion: str
    label: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """How every sample of a call is grouped and judged."""

    options: LabelOptions
    size: int
    wait_s: float
    opponents: Opponents = "all"
    scoring: Scoring = "mean"
    exploits: ExploitPolicy = "flag"


@dataclass(frozen=True, slots=True)
class SampleReward:
    """One sample's answer: its reward, whether it is a fallback (flagged to the trainer),
    the size of the group it was judged in, and how it was judged."""

    reward: float
    fallback: bool
    group_size: int
    how: How


def fit_opponents(opponents: Opponents, size: int) -> Opponents:
    """The schedule a smaller (partial) group can have: m capped at size − 1, and where G·m
    is odd rounded up (each completion keeps at least the matches asked for) or, at the cap,
    down; round robin when that is what is left."""
    if opponents == "all":
        return "all"
    m = min(opponents, size - 1)
    if (size * m) % 2:
        m = m + 1 if m + 1 <= size - 1 else m - 1
    return "all" if m < 1 or m == size - 1 else m


class GroupRewardService:
    """The trainer routes' grouped path: each sample through the assembler, each group judged
    once by the RewardService's group mode (or reference mode for a group of one)."""

    def __init__(
        self, rewards: RewardService, assembler: GroupAssembler, settings: Settings
    ) -> None:
        self.rewards = rewards
        self.assembler = assembler
        self.settings = settings

    @classmethod
    def over(cls, redis: Any, rewards: RewardService, settings: Settings) -> GroupRewardService:
        """Groups in Redis when the service has one (every replica sees them), else in this
        process (the embedded default: one replica)."""
        store: GroupStore = RedisGroupStore(redis) if redis is not None else MemoryGroupStore()
        assembler = GroupAssembler(
            store, grace_s=settings.reward_group_grace_s, retry_after_s=settings.retry_after_s
        )
        return cls(rewards, assembler, settings)

    async def sample_rewards(
        self, samples: Sequence[GroupSample], spec: GroupSpec, caller: Caller, *, route: str
    ) -> list[SampleReward]:
        """One reward per sample, in order; the call answers once all its samples' groups are
        judged (samples of one group in one call judge together)."""
        limit = self.settings.max_pairs_per_request
        if len(samples) > limit:
            raise InvalidRequest(
                f"{len(samples)} samples, over the limit of {limit} per request",
                type="too_many_samples",
                param="query",
            )
        # A typo in the constitution fails here, loudly, before anyone waits on a group.
        await asyncio.to_thread(self.rewards.labels.check_options, spec.options)
        timeout_s = self.settings.trainer_reward_timeout_s

        async def judge(members: list[dict[str, Any]]) -> list[SlotResult]:
            return await self._judge(members, spec, caller, route, timeout_s)

        results = await asyncio.gather(
            *(
                self.assembler.submit(
                    self._scope(sample, spec, caller),
                    {
                        "prompt": sample.prompt,
                        "completion": sample.completion,
                        "label": sample.label,
                    },
                    size=spec.size,
                    wait_s=spec.wait_s,
                    judge=judge,
                    judge_timeout_s=timeout_s,
                )
                for sample in samples
            )
        )
        answers: list[SampleReward] = []
        for result in results:
            raise_error(result)
            answers.append(
                SampleReward(
                    float(result["reward"]),
                    bool(result["fallback"]),
                    int(result["size"]),
                    result["how"],
                )
            )
        fell_back = sum(a.fallback for a in answers)
        if fell_back:
            self.rewards.metrics.observe_reward_fallbacks(route, fell_back)
        return answers

    @staticmethod
    def _scope(sample: GroupSample, spec: GroupSpec, caller: Caller) -> str:
        """Samples group together only with the same caller, options, size and group key."""
        key = sample.key if sample.key is not None else sample.prompt
        return hashlib.sha256(
            _dumps(
                {
                    "caller": caller.identity,
                    "options": spec.options.to_dict(),
                    "size": spec.size,
                    "opponents": spec.opponents,
                    "scoring": spec.scoring,
                    "key": key,
                }
                # Only when set, so a default call's scope stays what it was before.
                | ({"exploits": spec.exploits} if spec.exploits != "flag" else {})
            )
        ).hexdigest()

    async def _judge(
        self,
        members: list[dict[str, Any]],
        spec: GroupSpec,
        caller: Caller,
        route: str,
        timeout_s: float,
    ) -> list[SlotResult]:
        size = len(members)
        if size == 1 and not members[0].get("label"):
            logger.warning("%s: a group of one with no label to judge it against fell back", route)
            return [_fallback(1)]
        command = (
            RewardCommand(
                spec.options,
                "reference",
                [
                    {
                        "id": "0",
                        "prompt": members[0]["prompt"],
                        "completion": members[0]["completion"],
                        "reference": str(members[0]["label"]),
                    }
                ],
                exploits=spec.exploits,
            )
            if size == 1
            else RewardCommand(
                spec.options,
                "group",
                [
                    {
                        "id": "group",
                        "prompt": members[0]["prompt"],
                        "completions": [m["completion"] for m in members],
                    }
                ],
                opponents=fit_opponents(spec.opponents, size),
                scoring=spec.scoring,
                exploits=spec.exploits,
            )
        )
        try:
            outcome = await asyncio.wait_for(self.rewards.rewards(command, caller), timeout_s)
        except TimeoutError:
            logger.warning(
                "%s: a group of %d not judged within %s s fell back", route, size, timeout_s
            )
            return [_fallback(size)] * size
        [result] = outcome.results
        if isinstance(result, GroupRewards):
            return [_judged(r, size, "group") for r in result.rewards]
        if isinstance(result, ItemReward):
            return [_judged(result.reward, 1, "reference")]
        logger.warning("%s: a group of %d fell back: %s", route, size, result.error.message)
        return [_fallback(size)] * size


# A group that could not be judged gives every member this one value: equal rewards within
# a group are zero advantage (DESIGN.md §9), and the flag tells the trainer it is no verdict.
FALLBACK_REWARD = 0.5


def _judged(reward: float, size: int, how: How) -> SlotResult:
    return {"reward": reward, "fallback": False, "size": size, "how": how}


def _fallback(size: int) -> SlotResult:
    return {"reward": FALLBACK_REWARD, "fallback": True, "size": size, "how": "fallback"}
