"""What every trainer adapter shares: batches that fit, one deadline, neutral flagged fallbacks.

DESIGN.md §9, "Rewards at training scale". A real GRPO step is hundreds of groups against a
judge other teams share; the first adapters put up to 64 groups with every principle in one
request, the server refused it whole (422) and 96 of 96 completions got the fallback; and a
120 s per-call timeout turned a busy judge (one G=8 group with 4 principles ~100 s, p50 440 s
at 8 in flight) into fallbacks. So every adapter goes through `RewardCaller`, which

- **sends batches that fit**: it reads the server's limits once (`GET /v1/limits`; a 404 from
  an older server means "unknown"), packs consecutive groups or items into requests under
  them (entries, pairs, score units = pairs × principles × 2 orders, body bytes) and under the
  caller's own `per_request`, runs at most `concurrency` requests at once, and halves a request
  the server still refuses for its size (422 `request_too_large`, 413). A single group that is
  too large cannot be split: that is a configuration error, raised with the server's message;
- **has one deadline for the whole call** (`deadline`, default `DEFAULT_DEADLINE_S`): each
  request's HTTP timeout is what is left of it, and backpressure (429/503 with Retry-After,
  5xx, a lost connection) is waited out and retried within it. The client's own retries are
  turned off for these requests so that the deadline, not a retry count, governs;
- **raises configuration errors** (401/403, 404 unknown constitution, 422 bad option, a group
  that can never fit, an impossible schedule): never a reward, a typo must not train a policy
  on a constant (`JudgeConfigurationError`);
- **falls back only for a completion not judged before the deadline** (or refused in place by
  the server, or alone in its group): flagged per completion, counted in `RewardStats`, logged,
  and *neutral*: the mean of its judged group mates where the group is known, else `fallback`
  (0.5): a group where nothing was judged gets the same value everywhere, so zero advantage.

Counts are per completion everywhere (group mode and reference mode alike). Without a client,
one `AsyncCaiJudge()` per event loop is made from `CAI_JUDGE_BASE_URL` and `CAI_JUDGE_API_KEY`,
and closed when that loop shuts its async generators down (what `asyncio.run` does at its end),
so a trainer that runs each step under `asyncio.run` does not leak a connection pool a step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

# typing_extensions, not typing: the SDK still runs on 3.10, which has neither.
from typing_extensions import TypedDict

from cai_judge_client._base_client import parse_retry_after
from cai_judge_client._exceptions import (
    APIConnectionError,
    APIStatusError,
    CaiJudgeError,
    NotFoundError,
)
from cai_judge_client._labeling_plan import OPTION_DEFAULTS
from cai_judge_client.types.labels import Aggregator
from cai_judge_client.types.rewards import (
    GroupRewards,
    ItemReward,
    Opponents,
    RewardError,
    RewardsResponse,
    Scoring,
)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DEADLINE_S",
    "DEFAULT_FALLBACK",
    "AsyncRewardFunc",
    "GroupJudgeOptions",
    "GroupRewardOptions",
    "JudgeConfigurationError",
    "JudgeOptions",
    "RewardCaller",
    "RewardOptions",
    "RewardStats",
    "RewardsAPI",
    "completion_text",
    "judge_prompt",
    "make_sync",
    "neutral_fill",
    "split_options",
]

logger = logging.getLogger("cai_judge_client.integrations")

AsyncRewardFunc = Callable[..., Coroutine[Any, Any, list[float]]]
Prompt = str | list[dict[str, str]]

# A training step waits on its rewards; a fallback is worse than a slow step (it trains on no
# signal), so the default deadline is long: 10 min covers the measured p50 of 440 s for G=8
# groups with 4 principles at 8 in flight on a busy CPU judge. Lower it for a fast judge.
DEFAULT_DEADLINE_S = 600.0
# Requests in flight per reward function: enough to keep a judge's batches full, few enough
# that one trainer worker does not fill a shared queue alone.
DEFAULT_CONCURRENCY = 4
# The reward of a completion not judged, where its group mates give no neutral value: a
# win probability of one half, no advantage either way.
DEFAULT_FALLBACK = 0.5
# Status codes that mean "not now": waited out (Retry-After when sent) within the deadline.
BACKPRESSURE = frozenset({408, 409, 429, 500, 502, 503, 504})
# Per-entry error types that no retry or split can clear: the adapter's configuration.
CONFIG_ENTRY_ERRORS = frozenset({"request_too_large", "invalid_schedule"})
# How much of max_body_bytes a planned request may use (JSON escapes, options, envelope).
BODY_MARGIN = 0.8


# -- the adapters' options, declared once ---------------------------------------------
#
# As openai-python declares a call's parameters once (`*_create_params.py`) and each method
# takes `**params: Unpack[...]`, every adapter takes its judge and call options as
# `**options: Unpack[...]` of these types: a default or an option is written here, not in
# eight signatures. The keyword arguments they replace keep working, by the same names.


class JudgeOptions(TypedDict, total=False):
    """What the judge is asked for each match (the request's options).

    `principles`: `"all"`, or k principles sampled per pair (seeded by `seed`);
    `aggregator`: how principles' margins combine (the server's default when None);
    `exploits`: what the server does with a completion that games the judge (`flag` it, or
    `floor` its reward); `calibrated`: p_a and margins from the server's calibration profile;
    `ensemble`: `adaptive` scores principles in rounds and stops once the side is settled at
    confidence 1 - `ensemble_delta` (fewer score units; `full` by default).
    A key left out takes the labeling options' default (`OPTION_DEFAULTS`, the server's).
    """

    principles: int | str
    seed: int
    aggregator: Aggregator | None
    exploits: Literal["flag", "floor"]
    calibrated: bool
    ensemble: Literal["full", "adaptive"]
    ensemble_delta: float


class GroupJudgeOptions(JudgeOptions, total=False):
    """Group mode adds how a group's matches are scheduled and scored: `opponents="all"`
    judges every pair of a group, an int m a seeded, balanced G·m/2 of them; `scoring` is the
    `mean` win probability or centred `bradley_terry` strengths."""

    opponents: Opponents
    scoring: Scoring


class CallOptions(TypedDict, total=False):
    """How the SDK calls: `deadline` bounds a whole call in seconds (backpressure retries
    included), `concurrency` the requests in flight, and a completion not judged in time
    gets `fallback` where its group gives no neutral value. `timeout` is the first
    release's name for `deadline` (deprecated)."""

    deadline: float
    concurrency: int
    fallback: float
    timeout: float | None


class RewardOptions(JudgeOptions, CallOptions, total=False):
    """A reference-mode adapter's options."""


class GroupRewardOptions(GroupJudgeOptions, CallOptions, total=False):
    """A group-mode adapter's options."""


# The defaults of the keys above. The judge's are the labeling options' (one SDK
# declaration, `_labeling_plan.OPTION_DEFAULTS`, held to the server's by
# tests/test_option_defaults.py); `exploits` and `calibrated` are sent only when given.
JUDGE_DEFAULTS: dict[str, Any] = {
    "principles": OPTION_DEFAULTS["principles"],
    "seed": OPTION_DEFAULTS["seed"],
    "aggregator": None,
    "opponents": "all",
    "scoring": "mean",
}
CALL_DEFAULTS: dict[str, Any] = {
    "deadline": DEFAULT_DEADLINE_S,
    "concurrency": DEFAULT_CONCURRENCY,
    "fallback": DEFAULT_FALLBACK,
    "timeout": None,
}


def _keys(kind: Any) -> frozenset[str]:
    return frozenset(kind.__required_keys__ | kind.__optional_keys__)


def split_options(
    constitution: str, given: Mapping[str, Any], kind: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the judge is asked, how the SDK calls) from an adapter's `**options` of type
    `kind`, each key that was left out at its default. `**options` accepts any name at run
    time, so a misspelt one is refused here as a keyword argument would have been."""
    known = _keys(kind)
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"unexpected option(s) {unknown}; the options are: {sorted(known)}")
    judge_keys = known & (_keys(GroupJudgeOptions))
    judge: dict[str, Any] = {"constitution": constitution}
    call: dict[str, Any] = {}
    for key in sorted(known):
        value = given.get(key, JUDGE_DEFAULTS.get(key, CALL_DEFAULTS.get(key)))
        if key in judge_keys:
            if key in given or key in JUDGE_DEFAULTS:
                judge[key] = value
        else:
            call[key] = value
    return judge, call


class JudgeConfigurationError(CaiJudgeError):
    """The judge refused the adapter's configuration (unknown constitution, bad option or
    key, a group that can never fit one request): raised, never turned into a reward."""


class RewardsAPI(Protocol):
    """The SDK's rewards resource (`AsyncCaiJudge().rewards`): one call per mode."""

    async def group(
        self, groups: Sequence[Mapping[str, Any]], **options: Any
    ) -> RewardsResponse: ...

    async def reference(
        self, items: Sequence[Mapping[str, Any]], **options: Any
    ) -> RewardsResponse: ...


@dataclass
class RewardStats:
    """Counts since the reward function was made, all in completions except `calls`,
    `requests`, `splits` and `retries`.

    `judged` got a judge's reward; `fallbacks` did not (= `errors` + `timeouts` + those alone
    in their group); `errors`: refused or failed in place by the server; `timeouts`: not
    answered before the deadline; `requests`: HTTP requests sent; `splits`: requests halved
    because the server found them too large; `retries`: backpressure waits;
    `last_errors`: the latest reasons."""

    calls: int = 0
    completions: int = 0
    judged: int = 0
    fallbacks: int = 0
    errors: int = 0
    timeouts: int = 0
    requests: int = 0
    splits: int = 0
    retries: int = 0
    last_errors: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "completions": self.completions,
            "judged": self.judged,
            "fallbacks": self.fallbacks,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "requests": self.requests,
            "splits": self.splits,
            "retries": self.retries,
            "last_errors": list(self.last_errors),
        }


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes strings, or assistant messages for chat data. An
    empty completion stays empty: the service judges it (quoted as empty)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return str(completion)


def judge_prompt(prompt: Any) -> Prompt:
    """A trainer's prompt as the service takes it: a string, or chat messages."""
    if isinstance(prompt, str):
        return prompt
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def neutral_fill(
    values: Sequence[float | None], groups: Sequence[range] | None, fallback: float
) -> list[float]:
    """Each None (a completion not judged) as the mean of its judged group mates, so it gets
    no advantage over them; `fallback` where its group is unknown or nothing in it was
    judged (a constant over a group is zero advantage too)."""
    out = [fallback if v is None else v for v in values]
    for part in groups or ():
        judged = [v for v in (values[i] for i in part) if v is not None]
        if judged and len(judged) < len(part):
            mean = sum(judged) / len(judged)
            for i in part:
                if values[i] is None:
                    out[i] = mean
    return out


@dataclass(frozen=True)
class _Plan:
    """What the caller learned of the server once: its limits (None: unknown) and how many
    principles a pair is judged under (None: unknown, halving alone bounds the size)."""

    max_entries: int | None
    max_pairs: int | None
    max_units: int | None
    max_body: int | None
    max_group: int | None
    principles: int | None


def _pairs_in(entry: Mapping[str, Any], opponents: Any) -> int:
    if "completions" not in entry:
        return 1
    size = len(entry["completions"])
    if opponents == "all" or not isinstance(opponents, int):
        return size * (size - 1) // 2
    return size * min(opponents, max(size - 1, 0)) // 2


def _too_large(error: APIStatusError) -> bool:
    return error.status_code == 413 or (
        error.status_code == 422
        and (error.type == "request_too_large" or (error.type or "").startswith("too_many_"))
    )


def _describe(error: APIStatusError) -> str:
    kind = f" {error.type}" if error.type else ""
    param = f" ({error.param})" if error.param else ""
    return f"{error.status_code}{kind}: {error.message}{param}"


_Primitive = TypeVar("_Primitive")


def _per_loop(
    held: dict[int, tuple[asyncio.AbstractEventLoop, _Primitive]], make: Callable[[], _Primitive]
) -> _Primitive:
    """The running loop's own asyncio primitive from `held`, made on first use: a primitive
    binds to the loop it is first awaited on, and a trainer may call from several loops (a
    fresh `asyncio.run` per step). Entries of closed loops are dropped."""
    loop = asyncio.get_running_loop()
    entry = held.get(id(loop))
    if entry is None or entry[0] is not loop:
        for key in [k for k, v in held.items() if v[0].is_closed()]:
            del held[key]
        entry = (loop, make())
        held[id(loop)] = entry
    return entry[1]


class LoopClients:
    """One `AsyncCaiJudge` per event loop (an httpx client belongs to the loop it first ran
    on), closed when the loop shuts down its async generators: `asyncio.run` does that before
    closing the loop, so each step's pool is closed with its loop. Shared by every adapter
    that makes its own client (RewardCaller, the verl group adapter)."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[asyncio.AbstractEventLoop, Any, Any]] = {}

    async def get(self) -> Any:
        from cai_judge_client._client import AsyncCaiJudge

        loop = asyncio.get_running_loop()
        held = self._held.get(id(loop))
        if held is not None and held[0] is loop:
            return held[1]
        # Entries for loops already closed: their guards have run (or cannot any more).
        for key, (old, _, _) in list(self._held.items()):
            if old.is_closed():
                del self._held[key]
        client = AsyncCaiJudge()
        guard = _close_with_loop(client)
        # Started on this loop, so the loop's async-generator hooks track it; held here,
        # so it is not collected (and the client closed) before the loop ends.
        await guard.__anext__()
        self._held[id(loop)] = (loop, client, guard)
        return client


class RewardCaller:
    """Bounded, split, counted rewards calls for one reward function; see the module
    docstring. `client` is an `AsyncCaiJudge` (or its `.rewards`, or any object with the
    `RewardsAPI` calls); without one, one `AsyncCaiJudge()` per event loop."""

    def __init__(
        self,
        client: Any | None,
        options: Mapping[str, Any],
        *,
        deadline: float = DEFAULT_DEADLINE_S,
        fallback: float = DEFAULT_FALLBACK,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_request: int | None = None,
    ) -> None:
        if deadline <= 0:
            raise ValueError(f"deadline must be > 0 seconds, got {deadline}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 request in flight, got {concurrency}")
        if per_request is not None and per_request < 1:
            raise ValueError(f"per_request must be >= 1 group or item, got {per_request}")
        self.client = client
        self.options = {k: v for k, v in options.items() if v is not None}
        self.deadline = deadline
        self.fallback = fallback
        self.concurrency = concurrency
        self.per_request = per_request
        self.stats = RewardStats()
        self._plan: _Plan | None = None
        self._loop_clients = LoopClients()
        self._semaphores: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]] = {}
        self._learning: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}

    # -- the client -------------------------------------------------------------------

    async def _client(self) -> Any:
        if self.client is not None:
            return self.client
        return await self._loop_clients.get()

    def _semaphore(self) -> asyncio.Semaphore:
        """One per loop, shared by every call on it: verl and slime await many one-sample
        or one-group calls at once, and `concurrency` bounds their requests together."""
        return _per_loop(self._semaphores, lambda: asyncio.Semaphore(self.concurrency))

    def _learning_lock(self) -> asyncio.Lock:
        """One per loop: verl awaits a compute_score per sample, hundreds at once, and
        without it every one of them asked GET /v1/rewards/limits before the first answer
        came back (384 requests for one 48 × 8 step)."""
        return _per_loop(self._learning, asyncio.Lock)

    async def _api(self) -> Any:
        client = await self._client()
        # The caller retries backpressure itself, within its deadline; the client's own
        # retry count would otherwise govern (and a retry-after cap outlast the deadline).
        with_options = getattr(client, "with_options", None)
        if callable(with_options):
            client = with_options(max_retries=0)
        return getattr(client, "rewards", client)

    async def _learn(self, api: Any) -> _Plan:
        if self._plan is not None:
            return self._plan
        async with self._learning_lock():
            if self._plan is not None:  # learned while this call waited for the lock
                return self._plan
            return await self._ask_limits(api)

    async def _ask_limits(self, api: Any) -> _Plan:
        limits = None
        known = True
        if callable(getattr(api, "limits", None)):
            try:
                limits = await api.limits()
            except NotFoundError:
                logger.info("cai-judge has no GET /v1/limits (older server): halving on 422")
            except APIStatusError as error:
                if error.status_code in (401, 403):
                    raise JudgeConfigurationError(
                        f"cai-judge refused this client ({_describe(error)}): set "
                        "CAI_JUDGE_API_KEY or pass a client with the right key"
                    ) from error
                known = False  # asked again next call; halving bounds this one
            except APIConnectionError:
                known = False
        principles = self.options.get("principles", JUDGE_DEFAULTS["principles"])
        count: int | None = principles if isinstance(principles, int) else None
        if count is None and principles == "all":
            count = await self._constitution_size()
        plan = _Plan(
            max_entries=getattr(limits, "max_entries_per_request", None),
            max_pairs=getattr(limits, "max_pairs_per_request", None),
            max_units=min(
                (
                    v
                    for v in (
                        getattr(limits, "max_score_units_per_request", None),
                        getattr(limits, "max_queued_units", None),
                    )
                    if v
                ),
                default=None,
            ),
            max_body=getattr(limits, "max_body_bytes", None),
            max_group=getattr(limits, "max_group_size", None),
            principles=count,
        )
        if known:
            self._plan = plan
        return plan

    async def _constitution_size(self) -> int | None:
        """How many principles "all" means (`GET /v1/constitutions/{id}`), or None when the
        client cannot say (a bare rewards object); an unknown constitution raises here."""
        constitutions = getattr(await self._client(), "constitutions", None)
        if constitutions is None:
            return None
        try:
            constitution = await constitutions.retrieve(str(self.options["constitution"]))
        except NotFoundError as error:
            raise JudgeConfigurationError(
                f"cai-judge does not know constitution {self.options['constitution']!r} "
                f"({_describe(error)}); list them with GET /v1/constitutions"
            ) from error
        except (APIStatusError, APIConnectionError) as error:
            logger.info("could not read the constitution's size (%s): halving on 422", error)
            return None
        return len(constitution.principles)

    # -- splitting and sending ---------------------------------------------------------

    def _batches(self, entries: list[dict[str, Any]], plan: _Plan) -> list[list[int]]:
        """Consecutive entries packed greedily under every known limit."""
        opponents = self.options.get("opponents", JUDGE_DEFAULTS["opponents"])
        caps = [plan.max_entries, self.per_request]
        max_entries = min((c for c in caps if c), default=None)
        batches: list[list[int]] = []
        current: list[int] = []
        pairs = units = size = 0
        for index, entry in enumerate(entries):
            entry_pairs = _pairs_in(entry, opponents)
            entry_units = entry_pairs * 2 * (plan.principles or 1)
            entry_size = len(json.dumps(entry)) + 2
            fits = current and not (
                (max_entries and len(current) + 1 > max_entries)
                or (plan.max_pairs and pairs + entry_pairs > plan.max_pairs)
                or (plan.max_units and plan.principles and units + entry_units > plan.max_units)
                or (plan.max_body and size + entry_size > plan.max_body * BODY_MARGIN)
            )
            if current and not fits:
                batches.append(current)
                current, pairs, units, size = [], 0, 0, 0
            current.append(index)
            pairs, units, size = pairs + entry_pairs, units + entry_units, size + entry_size
        if current:
            batches.append(current)
        return batches

    async def _run(
        self, mode: str, entries: list[dict[str, Any]]
    ) -> list[GroupRewards | ItemReward | RewardError | BaseException | None]:
        """Every entry's result in order; None where the deadline came first."""
        self.stats.calls += 1
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.deadline
        results: list[Any] = [None] * len(entries)
        api = await self._api()
        call = api.group if mode == "group" else api.reference
        semaphore = self._semaphore()

        async def send(indices: list[int]) -> None:
            attempt = 0
            wait: float | None
            while True:
                async with semaphore:
                    left = ends - loop.time()
                    if left <= 0:
                        return  # its entries stay None: not judged within the deadline
                    try:
                        self.stats.requests += 1
                        answer = await call(
                            [entries[i] for i in indices], timeout=left, **self.options
                        )
                    except APIStatusError as error:
                        if _too_large(error):
                            if len(indices) == 1:
                                raise JudgeConfigurationError(
                                    f"cai-judge refused one {mode} as too large for a single "
                                    f"request ({_describe(error)}): it cannot be split; send "
                                    "fewer principles, shorter completions or a smaller group, "
                                    "or raise the server's limits"
                                ) from error
                            wait = None
                        elif error.status_code in BACKPRESSURE:
                            wait = parse_retry_after(error.response.headers)
                            wait = _backoff(attempt) if wait is None else wait
                        else:
                            raise JudgeConfigurationError(
                                f"cai-judge refused the rewards request ({_describe(error)}): "
                                "a configuration error, not a reward"
                            ) from error
                    except APIConnectionError:
                        wait = _backoff(attempt)
                    else:
                        if len(answer.results) != len(indices):
                            raise RuntimeError(
                                f"cai-judge answered {len(answer.results)} results to "
                                f"{len(indices)} {mode} entries"
                            )
                        for index, result in zip(indices, answer.results, strict=True):
                            results[index] = result
                        return
                if wait is None:
                    self.stats.splits += 1
                    half = len(indices) // 2
                    await _all([send(indices[:half]), send(indices[half:])])
                    return
                if loop.time() + wait >= ends:
                    return  # the others may still finish in time; these wait no longer
                self.stats.retries += 1
                attempt += 1
                await asyncio.sleep(wait)

        try:
            plan = await asyncio.wait_for(self._learn(api), max(ends - loop.time(), 0.001))
            _check_group_size(entries, plan.max_group)
            batches = self._batches(entries, plan)
            await asyncio.wait_for(
                _all([send(batch) for batch in batches]), max(ends - loop.time(), 0.001)
            )
        except asyncio.TimeoutError:  # noqa: UP041 (3.10: not the builtin)
            pass
        return results

    # -- the modes ---------------------------------------------------------------------

    def _account(self, what: str, result: Any, size: int) -> None:
        """A group or item of `size` completions that fell back: counted and logged."""
        self.stats.fallbacks += size
        if result is None:
            self.stats.timeouts += size
            why = f"not judged within the deadline of {self.deadline} s"
        else:
            self.stats.errors += size
            why = _why(result)
        self.stats.last_errors.append(f"{what}: {why}")
        logger.warning("cai-judge could not judge %s: %s", what, why)

    def alone(self, what: str, why: str) -> None:
        """A completion never sent (nothing in its group to judge it against): counted."""
        self.stats.completions += 1
        self.stats.fallbacks += 1
        self.stats.last_errors.append(f"{what}: {why}")
        logger.warning("cai-judge could not judge %s: %s", what, why)

    async def groups(self, groups: Sequence[tuple[Prompt, list[str]]]) -> list[list[float] | None]:
        """Each group's rewards in order, or None for a group not judged (counted)."""
        entries = [
            {"id": str(i), "prompt": prompt, "completions": completions}
            for i, (prompt, completions) in enumerate(groups)
        ]
        results = await self._run("group", entries) if entries else []
        out: list[list[float] | None] = []
        for index, ((_, completions), result) in enumerate(zip(groups, results, strict=True)):
            size = len(completions)
            self.stats.completions += size
            if isinstance(result, GroupRewards) and len(result.rewards) == size:
                self.stats.judged += size
                out.append(list(result.rewards))
                continue
            _raise_if_configuration("group", index, result)
            self._account(f"group {index} ({size} completions)", result, size)
            out.append(None)
        return out

    async def items(self, items: Sequence[tuple[Prompt, str, str]]) -> list[float | None]:
        """Reference-mode rewards per item in order, or None for an item not judged."""
        entries = [
            {"id": str(i), "prompt": prompt, "completion": completion, "reference": reference}
            for i, (prompt, completion, reference) in enumerate(items)
        ]
        results = await self._run("reference", entries) if entries else []
        out: list[float | None] = []
        for index, result in enumerate(results):
            self.stats.completions += 1
            if isinstance(result, ItemReward):
                self.stats.judged += 1
                out.append(result.reward)
                continue
            _raise_if_configuration("item", index, result)
            self._account(f"item {index}", result, 1)
            out.append(None)
        return out


async def _close_with_loop(client: Any) -> AsyncIterator[None]:
    """An async generator whose `finally` closes `client`: the loop finalizes it in
    `shutdown_asyncgens()` (the end of `asyncio.run`), on that loop, while it still runs."""
    try:
        yield
    finally:
        await client.close()


async def _all(coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run all; on the first error cancel the rest (no request left running unowned)."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, as the client's own policy (0.5 s to 20 s)."""
    return random.uniform(0, min(20.0, 0.5 * 2**attempt))


def _check_group_size(entries: list[dict[str, Any]], limit: int | None) -> None:
    largest = max((len(e.get("completions", ())) for e in entries), default=0)
    if limit and largest > limit:
        raise JudgeConfigurationError(
            f"a group of {largest} completions is over the server's max_group_size of "
            f"{limit}: lower num_generations, or raise the server's limit"
        )


def _raise_if_configuration(what: str, index: int, result: Any) -> None:
    if isinstance(result, RewardError) and result.error.type in CONFIG_ENTRY_ERRORS:
        raise JudgeConfigurationError(
            f"cai-judge refused {what} {index}: {_why(result)}; a configuration error (it "
            "cannot be judged in any request), not a reward"
        )


def _why(result: Any) -> str:
    if isinstance(result, RewardError):
        param = f" ({result.error.param})" if result.error.param else ""
        return f"{result.error.type}: {result.error.message}{param}"
    if isinstance(result, BaseException):
        return f"{type(result).__name__}: {result}"
    return f"unexpected answer {result!r}"


def make_sync(reward: AsyncRewardFunc) -> Callable[..., list[float]]:
    """The same reward for trainers that call reward functions synchronously: runs it on a
    private event loop in a daemon thread (one loop, so one connection pool, for all calls).
    `stats` is the async function's own: counts are shared, whichever form is called."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="cai-judge-reward", daemon=True).start()

    def sync_reward(*args: Any, **kwargs: Any) -> list[float]:
        future = asyncio.run_coroutine_threadsafe(reward(*args, **kwargs), loop)
        return future.result()

    sync_reward.__name__ = getattr(reward, "__name__", "cai_judge_reward")
    sync_reward.stats = getattr(reward, "stats", None)  # type: ignore[attr-defined]
    return sync_reward
