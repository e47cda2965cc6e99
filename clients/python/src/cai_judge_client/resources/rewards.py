"""`client.rewards`: `POST /v1/rewards` in group mode (`group`) or reference mode
(`reference`), OpenRLHF's body as it is (`openrlhf`), and the server's per-request limits
(`limits`, `GET /v1/limits`), docs/DESIGN.md §9.

`limits()` is what lets the trainer adapters split a generation batch into requests that fit
before sending them ("Rewards at training scale"); an older server without the route answers
404, and the adapters then fall back to halving a request the server refuses for its size.

Rewards are computed by the service (its schedule, its math, its one labeling pipeline), so
these shells only build the body and parse the answer; `Rewards` and `AsyncRewards` differ
only in `await`. The trainer adapters (`integrations/`) call `AsyncRewards` through a total
timeout and a fallback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from typing_extensions import Unpack

from cai_judge_client._base_client import NOT_GIVEN, RequestOptions
from cai_judge_client._jobs import job_params, wire_options
from cai_judge_client._labeling_plan import LabelingOptions, label_options
from cai_judge_client._resource import AsyncAPIResource, SyncAPIResource
from cai_judge_client.types.rewards import ExploitPolicy, Opponents, RewardsResponse, Scoring

__all__ = ["AsyncRewards", "RewardLimits", "Rewards"]

_LIMITS = RequestOptions("GET", "/v1/limits")


@dataclass(frozen=True)
class RewardLimits:
    """The server's bounds on one request (`GET /v1/limits`). A field the server does not
    send is None: a newer SDK against an older server plans with what it is told."""

    max_pairs_per_request: int | None = None
    max_score_units_per_request: int | None = None
    max_tokens_per_request: int | None = None
    max_body_bytes: int | None = None
    max_entries_per_request: int | None = None
    max_group_size: int | None = None
    max_queued_units: int | None = None
    trainer_reward_timeout_s: float | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> RewardLimits:
        def number(name: str) -> Any:
            value = data.get(name)
            return (
                value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            )

        return cls(**{name: number(name) for name in cls.__dataclass_fields__})


def _exploits(exploits: ExploitPolicy) -> dict[str, Any]:
    """Sent only when not the server's default, so a default request stays what an older
    server accepts."""
    return {} if exploits == "flag" else {"exploits": exploits}


def _group(
    groups: Iterable[Mapping[str, Any]],
    opponents: Opponents,
    scoring: Scoring,
    detail: bool,
    options: Mapping[str, Any],
    timeout: Any,
    exploits: ExploitPolicy = "flag",
) -> RequestOptions:
    body = {
        "groups": [dict(g) for g in groups],
        "opponents": opponents,
        "scoring": scoring,
        "detail": detail,
        **_exploits(exploits),
        **wire_options(label_options(options)),
    }
    return RequestOptions("POST", "/v1/rewards", json=body, timeout=timeout)


def _reference(
    items: Iterable[Mapping[str, Any]],
    detail: bool,
    options: Mapping[str, Any],
    timeout: Any,
    exploits: ExploitPolicy = "flag",
) -> RequestOptions:
    body = {
        "items": [dict(i) for i in items],
        "detail": detail,
        **_exploits(exploits),
        **wire_options(label_options(options)),
    }
    return RequestOptions("POST", "/v1/rewards", json=body, timeout=timeout)


def _openrlhf(
    query: Sequence[str],
    prompts: Sequence[str],
    labels: Sequence[Any],
    options: Mapping[str, Any],
    timeout: Any,
) -> RequestOptions:
    return RequestOptions(
        "POST",
        "/v1/rewards/openrlhf",
        json={"query": list(query), "prompts": list(prompts), "labels": list(labels)},
        params=job_params(wire_options(label_options(options))),
        timeout=timeout,
    )


class Rewards(SyncAPIResource):
    def group(
        self,
        groups: Iterable[Mapping[str, Any]],
        *,
        opponents: Opponents = "all",
        scoring: Scoring = "mean",
        detail: bool = False,
        exploits: ExploitPolicy = "flag",
        timeout: Any = NOT_GIVEN,
        **options: Unpack[LabelingOptions],
    ) -> RewardsResponse:
        """Group mode: each group `{id, prompt, completions}` judged against itself; a
        result per group, in order (`GroupRewards`, or a `RewardError` in its place).
        `opponents`: "all" (round robin) or m; `scoring`: "mean" or "bradley_terry";
        `exploits="floor"`: a completion flagged as a judge exploit gets its group's lowest
        reward; `calibrated=True`: every match length-debiased by the server's profile."""
        request = _group(groups, opponents, scoring, detail, options, timeout, exploits)
        return RewardsResponse.parse(self._request(request).json())

    def reference(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        detail: bool = False,
        exploits: ExploitPolicy = "flag",
        timeout: Any = NOT_GIVEN,
        **options: Unpack[LabelingOptions],
    ) -> RewardsResponse:
        """Reference mode: each item `{id, prompt, completion, reference}`; its reward is
        P(completion ≻ reference) under the constitution."""
        request = _reference(items, detail, options, timeout, exploits)
        return RewardsResponse.parse(self._request(request).json())

    def openrlhf(
        self,
        query: Sequence[str],
        prompts: Sequence[str],
        labels: Sequence[Any],
        *,
        timeout: Any = NOT_GIVEN,
        **options: Unpack[LabelingOptions],
    ) -> dict[str, Any]:
        """OpenRLHF's body to `/v1/rewards/openrlhf`; its `{rewards, scores, extra_logs}`."""
        request = _openrlhf(query, prompts, labels, options, timeout)
        return dict(self._request(request).json())

    def limits(self) -> RewardLimits:
        """The server's per-request limits (`GET /v1/limits`); `NotFoundError` from a server
        older than the route."""
        return RewardLimits.parse(self._request(_LIMITS).json())


class AsyncRewards(AsyncAPIResource):
    async def group(
        self,
        groups: Iterable[Mapping[str, Any]],
        *,
        opponents: Opponents = "all",
        scoring: Scoring = "mean",
        detail: bool = False,
        exploits: ExploitPolicy = "flag",
        timeout: Any = NOT_GIVEN,
        **options: Unpack[LabelingOptions],
    ) -> RewardsResponse:
        """`Rewards.group`, awaited."""
        request = _group(groups, opponents, scoring, detail, options, timeout, exploits)
        return RewardsResponse.parse((await self._request(request)).json())

    async def reference(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        detail: bool = False,
        exploits: ExploitPolicy = "flag",
        timeout: Any = NOT_GIVEN,
        **options: Unpack[LabelingOptions],
    ) -> RewardsResponse:
        """`Rewards.reference`, awaited."""
        request = _reference(items, detail, options, timeout, exploits)
        return RewardsResponse.parse((await self._request(request)).json())

    async def openrlhf(
        self,
        query: Sequence[str],
        prompts: Sequence[str],
        labels: Sequence[Any],
        *,
        timeout: Any = NOT_GIVEN,
        **options: Unpack[LabelingOptions],
    ) -> dict[str, Any]:
        """`Rewards.openrlhf`, awaited."""
        request = _openrlhf(query, prompts, labels, options, timeout)
        return dict((await self._request(request)).json())

    async def limits(self) -> RewardLimits:
        """`Rewards.limits`, awaited."""
        return RewardLimits.parse((await self._request(_LIMITS)).json())
