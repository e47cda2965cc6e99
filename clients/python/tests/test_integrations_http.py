"""The adapters at training scale, over HTTP: limits, splitting, backpressure, config errors.

DESIGN.md §9 "Rewards at training scale". The server here is a stub (httpx's MockTransport)
that speaks the contract: `GET /v1/limits` (or 404, an older server), a 422
`request_too_large` for a request over its score units, 429 with Retry-After, 404/422/401 for
configuration errors. A stub, because what is under test is the adapter's reaction to each
answer, which a live server cannot be made to give on demand; the adapters against the real
app are in tests/services/test_rewards_at_scale.py and tests/e2e/test_rewards_trainers.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

import cai_judge_client as sdk
from cai_judge_client.integrations._core import JudgeConfigurationError
from cai_judge_client.integrations.trl import group_reward_func, reference_reward_func
from sdk_support import BASE_URL

PRINCIPLES = 4
WORDS = " ".join(["word"] * 20)


def _error(status: int, kind: str, message: str, **headers: str) -> httpx.Response:
    body = {"error": {"type": kind, "message": message, "param": None}}
    return httpx.Response(status, json=body, headers=headers)


class StubJudge:
    """The rewards contract, with knobs: `limits` (None: 404), the score units a request may
    carry (`max_units`: over it, a whole-request 422), `busy` Retry-After seconds to answer
    429 with first, and `refuse` an answer for every rewards request."""

    def __init__(
        self,
        *,
        limits: dict[str, Any] | None = None,
        max_units: int | None = None,
        busy: list[float] | None = None,
        refuse: httpx.Response | None = None,
        delay: float = 0.01,
    ) -> None:
        self.limits = limits
        self.max_units = max_units
        self.busy = list(busy or [])
        self.refuse = refuse
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak = 0

    def units(self, body: dict[str, Any]) -> int:
        groups = body.get("groups") or []
        pairs = sum(len(g["completions"]) * (len(g["completions"]) - 1) // 2 for g in groups)
        pairs += len(body.get("items") or [])
        principles = body.get("principles", "all")
        return pairs * 2 * (principles if isinstance(principles, int) else PRINCIPLES)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/limits":
            if self.limits is None:
                return _error(404, "not_found", "no route /v1/limits")
            return httpx.Response(200, json=self.limits)
        if path.startswith("/v1/constitutions/"):
            ref = path.rsplit("/", 1)[1]
            if ref != "harmless":
                return _error(404, "constitution_not_found", f"unknown constitution {ref!r}")
            principles = [{"id": f"p{i}", "question": "Which is better?"} for i in range(4)]
            return httpx.Response(
                200,
                json={"version": "v" * 64, "id": ref, "description": "", "template": "t",
                      "principles": principles},
            )  # fmt: skip
        body = json.loads(request.content)
        self.requests.append(body)
        if self.refuse is not None:
            return self.refuse
        if self.busy:
            return _error(
                429, "rate_limited", "slow down", **{"Retry-After": str(self.busy.pop(0))}
            )
        units = self.units(body)
        if self.max_units is not None and units > self.max_units:
            return _error(
                422,
                "request_too_large",
                f"request needs {units} score units, over the queue capacity of "
                f"{self.max_units}; send fewer groups or principles",
            )
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        if "groups" in body:
            results = [
                {"id": g["id"], "rewards": [len(c) / 1000 for c in g["completions"]]}
                for g in body["groups"]
            ]
        else:
            results = [{"id": i["id"], "reward": 0.25} for i in body["items"]]
        return httpx.Response(200, json={"results": results, "usage": {}})


def judge_client(stub: StubJudge) -> sdk.AsyncCaiJudge:
    return sdk.AsyncCaiJudge(
        base_url=BASE_URL,
        api_key="k",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(stub)),
    )


def batch(prompts: int = 12, generations: int = 8) -> tuple[list[str], list[str]]:
    """A generation batch as TRL hands it: each prompt `generations` times, consecutively."""
    prompt_list = [f"prompt {p}" for p in range(prompts) for _ in range(generations)]
    completions = [f"{g} {WORDS}" + "!" * g for _ in range(prompts) for g in range(generations)]
    return prompt_list, completions


async def test_a_batch_over_the_server_limit_is_halved_until_it_fits() -> None:
    """The finding: 12 prompts × 8 completions, 4 principles, in one request is 2,688 score
    units; a server that takes 1,000 refused it whole (422), and all 96 got the fallback. An
    older server (no /v1/limits): the adapter halves on the 422 until each request fits."""
    stub = StubJudge(limits=None, max_units=1000)
    reward = group_reward_func(
        judge_client(stub), num_generations=8, constitution="harmless", principles=PRINCIPLES
    )
    prompts, completions = batch()
    rewards = await reward(prompts=prompts, completions=completions)
    stats = reward.stats  # type: ignore[attr-defined]
    assert (stats.judged, stats.fallbacks) == (96, 0), stats.as_dict()
    assert rewards == [len(c) / 1000 for c in completions]
    assert stats.splits > 0
    # The requests the stub accepted carried each group exactly once.
    accepted = [g["prompt"] for b in stub.requests if stub.units(b) <= 1000 for g in b["groups"]]
    assert sorted(accepted) == sorted(f"prompt {p}" for p in range(12))


async def test_the_server_limits_size_the_requests_before_sending() -> None:
    """With GET /v1/limits the batch is split before sending: no request is refused, and
    at most `concurrency` are in flight. Principles "all" counts the constitution's."""
    limits = {"max_score_units_per_request": 500, "max_entries_per_request": 256,
              "max_pairs_per_request": 4096, "max_body_bytes": 8 * 2**20,
              "max_queued_units": 8192}  # fmt: skip
    stub = StubJudge(limits=limits, max_units=500, delay=0.05)
    reward = group_reward_func(
        judge_client(stub), num_generations=8, constitution="harmless", concurrency=2
    )
    prompts, completions = batch()
    await reward(prompts=prompts, completions=completions)
    stats = reward.stats  # type: ignore[attr-defined]
    assert (stats.judged, stats.splits) == (96, 0), stats.as_dict()
    # 28 pairs × 4 principles × 2 orders = 224 units a group: two groups a request.
    assert [len(body["groups"]) for body in stub.requests] == [2] * 6
    assert stub.peak == 2


async def test_per_request_caps_the_groups_in_one_request() -> None:
    stub = StubJudge(limits=None)
    reward = group_reward_func(
        judge_client(stub), num_generations=8, constitution="harmless", principles=1,
        per_request=5,
    )  # fmt: skip
    prompts, completions = batch()
    await reward(prompts=prompts, completions=completions)
    assert [len(body["groups"]) for body in stub.requests] == [5, 5, 2]


async def test_a_single_group_too_large_is_a_configuration_error() -> None:
    stub = StubJudge(limits=None, max_units=100)
    reward = group_reward_func(
        judge_client(stub), num_generations=8, constitution="harmless", principles=PRINCIPLES
    )
    prompts, completions = batch(prompts=2)
    with pytest.raises(JudgeConfigurationError, match=r"224 score units.*cannot be split"):
        await reward(prompts=prompts, completions=completions)


async def test_a_group_over_the_servers_max_group_size_raises_before_sending() -> None:
    stub = StubJudge(limits={"max_group_size": 4})
    reward = group_reward_func(
        judge_client(stub), num_generations=8, constitution="harmless", principles=1
    )
    prompts, completions = batch(prompts=1)
    with pytest.raises(JudgeConfigurationError, match="max_group_size of 4"):
        await reward(prompts=prompts, completions=completions)
    assert stub.requests == []


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (_error(404, "constitution_not_found", "unknown constitution 'harmles'"), "harmles"),
        (_error(422, "invalid_request", "principles must be >= 1"), "principles must be"),
        (_error(401, "unauthorized", "missing or unknown API key"), "API key"),
        (_error(403, "forbidden", "this key may not"), "may not"),
    ],
)
async def test_configuration_errors_raise_never_a_reward(
    answer: httpx.Response, words: str
) -> None:
    stub = StubJudge(limits=None, refuse=answer)
    reward = reference_reward_func(
        judge_client(stub), reference_column="r", constitution="harmless", principles=2
    )
    with pytest.raises(JudgeConfigurationError, match=words):
        await reward(prompts=["p"], completions=["c"], r=["x"])
    assert reward.stats.fallbacks == 0  # type: ignore[attr-defined]


async def test_an_unknown_constitution_raises_at_the_first_call() -> None:
    stub = StubJudge(limits=None)
    reward = group_reward_func(judge_client(stub), num_generations=2, constitution="harmles")
    with pytest.raises(JudgeConfigurationError, match="does not know constitution 'harmles'"):
        await reward(prompts=["p", "p"], completions=["a", "b"])


async def test_backpressure_is_waited_out_within_the_deadline() -> None:
    """429 with Retry-After: waited and retried (not counted a fallback) while the deadline
    allows; the client's own retry count does not govern."""
    stub = StubJudge(limits=None, busy=[0.05] * 7)  # more than the client's 5 retries
    reward = group_reward_func(judge_client(stub), num_generations=2, constitution="harmless",
                               principles=1)  # fmt: skip
    assert await reward(prompts=["p", "p"], completions=["a", "bb"]) == [0.001, 0.002]
    stats = reward.stats  # type: ignore[attr-defined]
    assert (stats.retries, stats.judged, stats.fallbacks) == (7, 2, 0), stats.as_dict()


async def test_backpressure_past_the_deadline_falls_back_in_time() -> None:
    stub = StubJudge(limits=None, busy=[30.0])
    reward = group_reward_func(
        judge_client(stub), num_generations=2, constitution="harmless", principles=1,
        deadline=0.5,
    )  # fmt: skip
    started = asyncio.get_running_loop().time()
    assert await reward(prompts=["p", "p"], completions=["a", "bb"]) == [0.5, 0.5]
    assert asyncio.get_running_loop().time() - started < 0.5
    stats = reward.stats  # type: ignore[attr-defined]
    assert (stats.timeouts, stats.fallbacks) == (2, 2)


async def test_limits_resource() -> None:
    limits = {"max_pairs_per_request": 256, "max_score_units_per_request": 8192,
              "max_tokens_per_request": 10**6, "max_body_bytes": 8 * 2**20,
              "max_entries_per_request": 256, "max_group_size": 64,
              "max_queued_units": 8192, "trainer_reward_timeout_s": 100.0}  # fmt: skip
    client = judge_client(StubJudge(limits=limits))
    got = await client.rewards.limits()
    assert got.max_group_size == 64 and got.trainer_reward_timeout_s == 100.0
    assert got.max_score_units_per_request == 8192
    with pytest.raises(sdk.NotFoundError):
        await judge_client(StubJudge(limits=None)).rewards.limits()


def test_the_default_client_is_closed_with_each_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trainer running each step under asyncio.run gets a fresh loop each step; the adapter
    made a client per loop and dropped the previous one unclosed: one connection pool
    leaked per step. Each is now closed when its loop ends."""
    import cai_judge_client._client as client_module

    made: list[sdk.AsyncCaiJudge] = []
    stub = StubJudge(limits=None)

    class Recorded(sdk.AsyncCaiJudge):
        def __init__(self, **kwargs: Any) -> None:
            if "http_client" in kwargs:  # a with_options copy: shares the pool
                super().__init__(**kwargs)
                return
            super().__init__(base_url=BASE_URL, api_key="k")
            self._http = httpx.AsyncClient(transport=httpx.MockTransport(stub))
            made.append(self)

    monkeypatch.setattr(client_module, "AsyncCaiJudge", Recorded)
    reward = group_reward_func(num_generations=2, constitution="harmless", principles=1)
    for _ in range(3):
        assert asyncio.run(reward(prompts=["p", "p"], completions=["a", "bb"])) == [0.001, 0.002]
    assert len(made) == 3
    assert [client._http.is_closed for client in made] == [True, True, True]
