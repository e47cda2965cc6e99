"""What every trainer adapter shares: one bounded rewards call, its fallback and its counts.

DESIGN.md §9: a trainer must never hang on the judge. Every adapter goes through
`RewardCaller`, which

- bounds the whole call by a total `timeout` (not per request: a trainer step waits on the
  sum), and on timeout or failure gives `fallback` to every completion it could not judge
  (0.5 in group mode: every completion of the group alike, so zero advantage);
- logs each fallback and each per-group/per-item error the server reported with its reason,
  counts them in `RewardStats` (exposed on the reward function, its sync wrapper included)
  and, under TRL, in the trainer's own logged metrics (`log_metric`);
- never judges a second way: it sends groups or items to `POST /v1/rewards` through the
  SDK's rewards resource (`client.rewards`) and reads the rewards the service computed.

A TRL trial found a reward function that turned refused pairs
into silent ties: 34 of 48 pairs unjudged, nothing logged or counted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cai_judge_client.reward_types import (
    GroupRewards,
    ItemReward,
    RewardError,
    RewardsResponse,
)

__all__ = [
    "AsyncRewardFunc",
    "RewardCaller",
    "RewardStats",
    "RewardsAPI",
    "completion_text",
    "judge_prompt",
    "make_sync",
]

logger = logging.getLogger("cai_judge_client.integrations")

AsyncRewardFunc = Callable[..., Coroutine[Any, Any, list[float]]]
Prompt = str | list[dict[str, str]]


class RewardsAPI(Protocol):
    """The SDK's rewards resource (`AsyncCaiJudge().rewards`): one call per mode."""

    async def group(
        self, groups: Sequence[Mapping[str, Any]], **options: Any
    ) -> RewardsResponse: ...

    async def reference(
        self, items: Sequence[Mapping[str, Any]], **options: Any
    ) -> RewardsResponse: ...

    async def openrlhf(
        self, query: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **options: Any
    ) -> dict[str, Any]: ...


@dataclass
class RewardStats:
    """Counts since the reward function was made. `fallbacks` counts completions that got
    the fallback value; `errors` counts groups or items the server refused or failed;
    `timeouts` counts calls cut by the total timeout; `last_errors` keeps the latest reasons."""

    calls: int = 0
    completions: int = 0
    fallbacks: int = 0
    errors: int = 0
    timeouts: int = 0
    last_errors: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "completions": self.completions,
            "fallbacks": self.fallbacks,
            "errors": self.errors,
            "timeouts": self.timeouts,
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


def _api(client: Any) -> RewardsAPI:
    return getattr(client, "rewards", client)  # type: ignore[no-any-return]


class RewardCaller:
    """One bounded, counted rewards call per trainer call; see the module docstring.

    `client` is an `AsyncCaiJudge` (or its `.rewards`); without one, one `AsyncCaiJudge()`
    per event loop is made from `CAI_JUDGE_BASE_URL` and `CAI_JUDGE_API_KEY` (an httpx
    client belongs to the loop it first ran on, and a trainer that calls through
    `asyncio.run()` each step gets a fresh loop).
    """

    def __init__(
        self,
        client: Any | None,
        options: Mapping[str, Any],
        *,
        timeout: float,
        fallback: float,
        per_request: int = 64,
    ) -> None:
        if timeout <= 0 or per_request < 1:
            raise ValueError("timeout must be > 0 and per_request >= 1")
        self.client = client
        self.options = {k: v for k, v in options.items() if v is not None}
        self.timeout = timeout
        self.fallback = fallback
        self.per_request = per_request
        self.stats = RewardStats()
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}

    def _rewards_api(self) -> RewardsAPI:
        if self.client is not None:
            return _api(self.client)
        from cai_judge_client._client import AsyncCaiJudge

        loop = asyncio.get_running_loop()
        held = self._clients.get(id(loop))
        if held is None or held[0] is not loop:
            self._clients.clear()
            held = (loop, AsyncCaiJudge())
            self._clients[id(loop)] = held
        return _api(held[1])

    def fall_back(self, what: str, why: str, size: int) -> list[float]:
        """`size` completions that could not be judged: logged, counted, the fallback each."""
        self.stats.errors += 1
        self.stats.last_errors.append(f"{what}: {why}")
        logger.warning("cai-judge could not judge %s: %s", what, why)
        self.stats.fallbacks += size
        return [self.fallback] * size

    def fall_back_alone(self, what: str, why: str) -> float:
        """A completion never sent, with nothing in its group to judge it against."""
        self.stats.completions += 1
        return self.fall_back(what, why, 1)[0]

    async def _chunked(
        self, mode: str, entries: list[dict[str, Any]]
    ) -> list[GroupRewards | ItemReward | RewardError | BaseException]:
        api = self._rewards_api()
        call = api.group if mode == "group" else api.reference
        chunks = [
            entries[i : i + self.per_request] for i in range(0, len(entries), self.per_request)
        ]
        answers = await asyncio.gather(
            *(call(chunk, **self.options) for chunk in chunks), return_exceptions=True
        )
        out: list[GroupRewards | ItemReward | RewardError | BaseException] = []
        for chunk, answer in zip(chunks, answers, strict=True):
            if isinstance(answer, BaseException):
                out.extend([answer] * len(chunk))
            else:
                out.extend(answer.results)
        return out

    async def _bounded(
        self, mode: str, entries: list[dict[str, Any]]
    ) -> list[GroupRewards | ItemReward | RewardError | BaseException]:
        self.stats.calls += 1
        try:
            return await asyncio.wait_for(self._chunked(mode, entries), self.timeout)
        except asyncio.TimeoutError:  # noqa: UP041 (the SDK runs on 3.10, where it differs)
            self.stats.timeouts += 1
            why: BaseException = TimeoutError(
                f"no answer within the total timeout {self.timeout} s"
            )
            return [why] * len(entries)

    async def groups(self, groups: Sequence[tuple[Prompt, list[str]]]) -> list[list[float]]:
        """Rewards per group, in order; a group that could not be judged gets the fallback."""
        entries = [
            {"id": str(i), "prompt": prompt, "completions": completions}
            for i, (prompt, completions) in enumerate(groups)
        ]
        results = await self._bounded("group", entries) if entries else []
        out: list[list[float]] = []
        for index, ((_, completions), result) in enumerate(zip(groups, results, strict=True)):
            size = len(completions)
            self.stats.completions += size
            if isinstance(result, GroupRewards) and len(result.rewards) == size:
                out.append(list(result.rewards))
                continue
            out.append(self.fall_back(f"group {index} ({size} completions)", _why(result), size))
        return out

    async def items(self, items: Sequence[tuple[Prompt, str, str]]) -> list[float]:
        """Reference-mode rewards per item, in order; the fallback where one failed."""
        entries = [
            {"id": str(i), "prompt": prompt, "completion": completion, "reference": reference}
            for i, (prompt, completion, reference) in enumerate(items)
        ]
        results = await self._bounded("reference", entries) if entries else []
        out: list[float] = []
        for index, result in enumerate(results):
            self.stats.completions += 1
            if isinstance(result, ItemReward):
                out.append(result.reward)
                continue
            out.extend(self.fall_back(f"item {index}", _why(result), 1))
        return out

    async def openrlhf(
        self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any]
    ) -> dict[str, Any]:
        """OpenRLHF's body sent whole to `/v1/rewards/openrlhf` (the service splits each
        query into prompt and response); its answer, or the fallback in its shape."""
        self.stats.calls += 1
        self.stats.completions += len(queries)
        api = self._rewards_api()
        try:
            return await asyncio.wait_for(
                api.openrlhf(list(queries), list(prompts), list(labels), **self.options),
                self.timeout,
            )
        except asyncio.TimeoutError:  # noqa: UP041 (the SDK runs on 3.10, where it differs)
            self.stats.timeouts += 1
            why = f"no answer within the total timeout {self.timeout} s"
        except Exception as error:
            why = f"{type(error).__name__}: {error}"
        values = self.fall_back(f"{len(queries)} OpenRLHF queries", why, len(queries))
        return {"rewards": values, "scores": values, "extra_logs": {"cai_judge_fallback": 1.0}}


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
