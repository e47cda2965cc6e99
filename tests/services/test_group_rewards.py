"""Group assembly (services/group_rewards.py) over both stores: the embedded memory store and a
real redis-server, with a fake judge (the assembly is not the engine's logic): one judgement
per group, each slot its own result, partial groups after the wait, a judge that dies or whose
client leaves, and the schedule a partial group gets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from cai_judge.services.errors import InvalidRequest, NotFound, Unavailable
from cai_judge.services.group_rewards import (
    GroupAssembler,
    SlotResult,
    error_result,
    fit_opponents,
    raise_error,
)
from cai_judge.store.groups import GroupStore, MemoryGroupStore, RedisGroupStore

GRACE_S = 0.3


class FakeJudge:
    """Rewards each member by its completion's number; counts its calls and their sizes."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.delay_s = delay_s

    async def __call__(self, members: list[dict[str, Any]]) -> list[SlotResult]:
        self.calls.append(members)
        await asyncio.sleep(self.delay_s)
        return [
            {"reward": float(m["completion"]) / 10, "size": len(members), "fallback": False}
            for m in members
        ]


@pytest_asyncio.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[list[GroupStore]]:
    """Two replicas' stores: over one redis-server, or (embedded) one shared memory store."""
    if request.param == "memory":
        store = MemoryGroupStore()
        yield [store, store]
        return
    url = request.getfixturevalue("redis_url")
    clients = [Redis.from_url(url), Redis.from_url(url)]
    yield [RedisGroupStore(c) for c in clients]
    for client in clients:
        await client.aclose()


def assemblers(stores: list[GroupStore]) -> list[GroupAssembler]:
    return [GroupAssembler(store, grace_s=GRACE_S, retry_after_s=1) for store in stores]


async def submit(
    assembler: GroupAssembler,
    completion: int,
    judge: FakeJudge,
    *,
    size: int,
    wait_s: float = 5.0,
    judge_timeout_s: float = 1.0,
    scope: str = "scope",
) -> SlotResult:
    return await assembler.submit(
        scope,
        {"prompt": "p", "completion": str(completion), "label": None},
        size=size,
        wait_s=wait_s,
        judge=judge,
        judge_timeout_s=judge_timeout_s,
    )


async def test_a_full_group_is_judged_once_and_each_slot_gets_its_reward(
    stores: list[GroupStore],
) -> None:
    replicas = assemblers(stores)
    judge = FakeJudge(delay_s=0.05)
    started = time.monotonic()
    results = await asyncio.gather(*(submit(replicas[i % 2], i, judge, size=4) for i in range(4)))
    # The group filled: nobody waited out the 5 s wait.
    assert time.monotonic() - started < 2.0
    assert len(judge.calls) == 1
    assert sorted(m["completion"] for m in judge.calls[0]) == ["0", "1", "2", "3"]
    assert [r["reward"] for r in results] == [0.0, 0.1, 0.2, 0.3]
    assert all(r["size"] == 4 for r in results)
    assert sum(r.judgements for r in replicas) == 1


async def test_a_partial_group_is_judged_as_a_smaller_group_after_the_wait(
    stores: list[GroupStore],
) -> None:
    replicas = assemblers(stores)
    judge = FakeJudge()
    started = time.monotonic()
    results = await asyncio.gather(
        *(submit(replicas[i % 2], i, judge, size=4, wait_s=0.3) for i in range(3))
    )
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 2.0
    assert [len(call) for call in judge.calls] == [3]
    assert [r["size"] for r in results] == [3, 3, 3]
    assert [r["reward"] for r in results] == [0.0, 0.1, 0.2]


async def test_a_sample_after_a_full_group_opens_a_new_one(stores: list[GroupStore]) -> None:
    replicas = assemblers(stores)
    judge = FakeJudge()
    results = await asyncio.gather(
        *(submit(replicas[i % 2], i, judge, size=2, wait_s=0.3) for i in range(3))
    )
    assert sorted(len(call) for call in judge.calls) == [1, 2]
    # Which sample arrives last is up to the two connections; it is judged alone.
    assert sorted(r["size"] for r in results) == [1, 2, 2]


async def test_groups_of_other_scopes_never_mix(stores: list[GroupStore]) -> None:
    replicas = assemblers(stores)
    judge = FakeJudge()
    await asyncio.gather(
        *(submit(replicas[i % 2], i, judge, size=2, scope=f"s{i % 2}") for i in range(4))
    )
    assert sorted(sorted(m["completion"] for m in call) for call in judge.calls) == [
        ["0", "2"],
        ["1", "3"],
    ]


async def test_a_dead_judge_gives_its_waiters_a_retryable_error_within_the_bound(
    stores: list[GroupStore],
) -> None:
    """A replica that took the judge lock and died: the other sample does not hang, and it
    gets 503-to-be (Unavailable with Retry-After), never a reward."""
    dead, alive = stores
    ttl_s = 60
    joined = await dead.join("scope", "g-dead", b'{"prompt":"p","completion":"0"}', 3, ttl_s)
    assert await dead.claim(joined.group_id, "the dead replica", ttl_s)
    judge = FakeJudge()
    wait_s, judge_timeout_s = 0.2, 0.3
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await submit(
            GroupAssembler(alive, grace_s=GRACE_S, retry_after_s=1),
            1,
            judge,
            size=3,
            wait_s=wait_s,
            judge_timeout_s=judge_timeout_s,
        )
    elapsed = time.monotonic() - started
    assert wait_s + judge_timeout_s + GRACE_S - 0.05 <= elapsed < 2.0
    assert caught.value.retry_after_s == 1
    assert caught.value.type == "group_not_judged"
    assert judge.calls == []


async def test_the_group_is_judged_even_when_its_judges_client_leaves(
    stores: list[GroupStore],
) -> None:
    replicas = assemblers(stores)
    judge = FakeJudge(delay_s=0.2)
    first = asyncio.create_task(submit(replicas[0], 0, judge, size=2))
    await asyncio.sleep(0.05)
    filler = asyncio.create_task(submit(replicas[1], 1, judge, size=2))
    await asyncio.sleep(0.1)  # the filler is judging now
    assert len(judge.calls) == 1
    filler.cancel()
    assert (await first)["reward"] == 0.0
    with pytest.raises(asyncio.CancelledError):
        await filler


async def test_an_error_the_judge_meets_reaches_every_slot_as_the_same_typed_error(
    stores: list[GroupStore],
) -> None:
    replicas = assemblers(stores)

    async def judge(members: list[dict[str, Any]]) -> list[SlotResult]:
        raise NotFound("unknown constitution 'harmles'", param="constitution")

    results = await asyncio.gather(
        *(
            replicas[i].submit(
                "scope",
                {"completion": str(i)},
                size=2,
                wait_s=5,
                judge=judge,
                judge_timeout_s=1,
            )
            for i in range(2)
        )
    )
    for result in results:
        with pytest.raises(NotFound) as caught:
            raise_error(result)
        assert caught.value.param == "constitution"


def test_a_slot_error_survives_the_trip_between_replicas() -> None:
    result = json.loads(json.dumps(error_result(InvalidRequest("bad", param="principles"))))
    with pytest.raises(InvalidRequest) as caught:
        raise_error(result)
    assert (caught.value.message, caught.value.param) == ("bad", "principles")
    raise_error({"reward": 0.5})  # a result raises nothing


@pytest.mark.parametrize(
    ("opponents", "size", "fitted"),
    [
        ("all", 3, "all"),
        (3, 4, "all"),
        (2, 4, 2),
        (4, 3, "all"),
        (1, 3, "all"),
        (3, 5, "all"),
        (1, 5, 2),
    ],
)
def test_a_partial_group_gets_the_nearest_schedule_that_exists(
    opponents: int | str, size: int, fitted: int | str
) -> None:
    assert fit_opponents(opponents, size) == fitted  # type: ignore[arg-type]


async def test_a_judge_that_never_answers_gives_every_sample_a_retryable_error(
    stores: list[GroupStore],
) -> None:
    replicas = assemblers(stores)

    async def hangs(members: list[dict[str, Any]]) -> list[SlotResult]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    started = time.monotonic()
    results = await asyncio.gather(
        *(
            replicas[i].submit(
                "scope", {"completion": str(i)}, size=2, wait_s=5, judge=hangs, judge_timeout_s=0.2
            )
            for i in range(2)
        ),
        return_exceptions=True,
    )
    assert time.monotonic() - started < 0.2 + GRACE_S + 1.0
    for result in results:
        if isinstance(result, BaseException):  # a waiter that gave up first
            assert isinstance(result, Unavailable)
            continue
        with pytest.raises(Unavailable) as caught:
            raise_error(result)
        assert caught.value.retry_after_s == 1
