"""GRPO-shaped load through every adapter and trainer route (DESIGN.md §9, "Rewards at training
scale"; issue 28's load test).

A real uvicorn server on the fake engine (what is under test is the server and the adapters:
admission, batching, splitting, retries, grouping; not the engine's scores), with the default
settings. Several trainer workers run one step at once, B prompts × G completions each, through
the SDK's TRL, OpenRLHF-file, verl and slime adapters and the trainer routes
(/v1/rewards/openrlhf, /v1/rewards/slime, with and without `group_size`). Within capacity no
completion falls back; past it (a small `max_queued_units` on a slow engine) the server answers
429/503 with Retry-After, the trainers' clients retry, and every reward is still a judged one
(equal to a direct /v1/rewards of the same group or item) or a counted fallback: never a silent
0.5. Bounded: 4 workers × 12 prompts × 8 completions, K = 2 principles, seconds per test.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import cai_judge_client as sdk
from cai_judge.api.app import create_app
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from cai_judge_client.integrations.openrlhf import make_reward_func, openrlhf_conversation
from cai_judge_client.integrations.slime import make_group_rm
from cai_judge_client.integrations.trl import group_reward_func
from cai_judge_client.integrations.verl import make_compute_score
from tests.support.fake_engine import FakeEngine
from tests.support.threaded_server import threaded_server

WORKERS = 4
PROMPTS = 12
G = 8
K = 2
OPTIONS = {"constitution": "harmless", "principles": K}
QUERY = f"constitution=harmless&principles={K}"
TRIES = 10  # slime's client; OpenRLHF's tries 5


def chatml(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def step(workers: int = WORKERS, prompts: int = PROMPTS) -> list[list[dict[str, Any]]]:
    """Per worker, its groups: a prompt no other group has, G distinct completions (one
    empty), and a reference answer."""
    return [
        [
            {
                "prompt": chatml(f"Worker {w}, question {p}: how do I calm a barking dog?"),
                "completions": [
                    "" if g == 0 else f"Answer {g} for {w}.{p}" + " patiently" * (g % 4) + "."
                    for g in range(G)
                ],
                "reference": f"Reward quiet moments, worker {w} question {p}.",
            }
            for p in range(prompts)
        ]
        for w in range(workers)
    ]


@pytest.fixture
def server() -> Iterator[Any]:
    """`with server(**settings) as url`: the app with its defaults on the fake engine."""

    def make(unit_delay_s: float = 0.0, **settings: Any) -> Any:
        engine = FakeEngine(max_model_len=2048, unit_delay_s=unit_delay_s)
        app = create_app(
            Settings(max_model_len=2048, **settings),
            engine=engine,
            registry=ConstitutionRegistry.with_builtins(),
        )
        return threaded_server(app)

    yield make


async def direct_groups(
    url: str, groups: list[dict[str, Any]], opponents: int | str = "all"
) -> list[list[float]]:
    """Each group's rewards from /v1/rewards, one group a request (under any queue bound)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one(group: dict[str, Any]) -> list[float]:
            body = {
                **OPTIONS,
                "opponents": opponents,
                "groups": [
                    {"id": "g", "prompt": group["prompt"], "completions": group["completions"]}
                ],
            }
            answer = await post_retrying(http, "/v1/rewards", body, Counter())
            rewards: list[float] = answer.json()["results"][0]["rewards"]
            return rewards

        return [await one(group) for group in groups]


async def direct_items(url: str, groups: list[dict[str, Any]]) -> list[list[float]]:
    """Each completion's reward against its group's reference, from /v1/rewards."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        out = []
        for group in groups:
            items = [
                {"id": f"i{j}", "prompt": group["prompt"], "completion": c,
                 "reference": group["reference"]}
                for j, c in enumerate(group["completions"])
            ]  # fmt: skip
            answer = await post_retrying(
                http, "/v1/rewards", {**OPTIONS, "items": items}, Counter()
            )
            out.append([r["reward"] for r in answer.json()["results"]])
        return out


async def post_retrying(
    http: httpx.AsyncClient, path: str, body: Any, refusals: Counter[int]
) -> httpx.Response:
    """As OpenRLHF's and slime's clients do: raise for any other error, retry a 429/503
    after its Retry-After (which must be there), counting the refusals."""
    for _ in range(TRIES):
        answer = await http.post(path, json=body)
        if answer.status_code not in (429, 503):
            assert answer.status_code == 200, answer.text
            return answer
        refusals[answer.status_code] += 1
        assert "retry-after" in answer.headers, answer.text
        await asyncio.sleep(float(answer.headers["retry-after"]))
    raise AssertionError(f"{path}: still refused after {TRIES} tries")


def flat(nested: list[list[float]]) -> list[float]:
    return [r for part in nested for r in part]


def judged_or_counted(got: list[float], expected: list[float], counted: int) -> int:
    """How many of `got` are judged rewards; every other one must be among the `counted`
    fallbacks (a silent one would be a value the trainer cannot tell from a judgement)."""
    judged = sum(abs(a - b) < 1e-9 for a, b in zip(got, expected, strict=True))
    assert len(got) - judged <= counted, (len(got), judged, counted)
    return judged


# -- the SDK adapters, within capacity ---------------------------------------------------------


async def test_trl_workers_are_all_judged(server: Any) -> None:
    batch = step()
    with server() as url:

        async def worker(groups: list[dict[str, Any]]) -> tuple[list[float], Any]:
            reward = group_reward_func(
                sdk.AsyncCaiJudge(base_url=url),
                num_generations=G,
                constitution="harmless",
                principles=K,
            )
            prompts = [g["prompt"] for g in groups for _ in g["completions"]]
            completions = [c for g in groups for c in g["completions"]]
            return await reward(prompts=prompts, completions=completions), reward.stats  # type: ignore[attr-defined]

        answers = await asyncio.gather(*(worker(groups) for groups in batch))
        expected = [await direct_groups(url, groups) for groups in batch]
    for (rewards, stats), want in zip(answers, expected, strict=True):
        assert (stats.judged, stats.fallbacks) == (PROMPTS * G, 0), stats.as_dict()
        assert rewards == pytest.approx(flat(want), abs=1e-9)


async def test_openrlhf_file_workers_are_all_judged(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file form as OpenRLHF loads it: the judge's address from the environment, the
    sync `reward_func` called from several workers at once."""
    batch = step()
    with server() as url:
        monkeypatch.setenv("CAI_JUDGE_BASE_URL", url)
        reward_func = make_reward_func(constitution="harmless", principles=K)

        def worker(groups: list[dict[str, Any]]) -> dict[str, Any]:
            queries = [g["prompt"] + c + "<|im_end|>" for g in groups for c in g["completions"]]
            prompts = [g["prompt"] for g in groups for _ in g["completions"]]
            labels = [g["reference"] for g in groups for _ in g["completions"]]
            answer: dict[str, Any] = reward_func(queries, prompts, labels)
            return answer

        answers = await asyncio.gather(*(asyncio.to_thread(worker, groups) for groups in batch))
        # The file form judges the conversation (ChatML turned back into messages).
        conversations = [
            [{**g, "prompt": openrlhf_conversation(g["prompt"])} for g in groups]
            for groups in batch
        ]
        expected = [await direct_items(url, groups) for groups in conversations]
    stats = reward_func.stats  # type: ignore[attr-defined]
    assert (stats.judged, stats.fallbacks) == (WORKERS * PROMPTS * G, 0), stats.as_dict()
    for answer, want in zip(answers, expected, strict=True):
        assert answer["extra_logs"]["cai_judge_fallback"] == 0.0
        assert answer["rewards"] == pytest.approx(flat(want), abs=1e-9)


async def test_verl_samples_are_all_judged(server: Any) -> None:
    """verl's reward loop: one `compute_score` call a sample, all of a step's at once."""
    batch = step()
    with server() as url:
        compute_score = make_compute_score(
            sdk.AsyncCaiJudge(base_url=url), constitution="harmless", principles=K
        )

        async def worker(groups: list[dict[str, Any]]) -> list[dict[str, float]]:
            return list(
                await asyncio.gather(
                    *(
                        compute_score(
                            data_source="hh",
                            solution_str=c,
                            ground_truth=g["reference"],
                            extra_info={"question": g["prompt"]},
                        )
                        for g in groups
                        for c in g["completions"]
                    )
                )
            )

        answers = await asyncio.gather(*(worker(groups) for groups in batch))
        expected = [await direct_items(url, groups) for groups in batch]
    assert compute_score.stats.fallbacks == 0, compute_score.stats.as_dict()  # type: ignore[attr-defined]
    for scores, want in zip(answers, expected, strict=True):
        assert {s["cai_judge_fallback"] for s in scores} == {0.0}
        assert [s["score"] for s in scores] == pytest.approx(flat(want), abs=1e-9)


async def test_slime_group_rm_workers_are_all_judged(server: Any) -> None:
    batch = step()
    with server() as url:
        group_rm = make_group_rm(
            sdk.AsyncCaiJudge(base_url=url), constitution="harmless", principles=K
        )

        async def worker(groups: list[dict[str, Any]]) -> list[list[float]]:
            samples = [
                [SimpleNamespace(prompt=g["prompt"], response=c) for c in g["completions"]]
                for g in groups
            ]
            return list(await asyncio.gather(*(group_rm(None, s) for s in samples)))

        answers = await asyncio.gather(*(worker(groups) for groups in batch))
        expected = [await direct_groups(url, groups) for groups in batch]
    assert group_rm.stats.fallbacks == 0, group_rm.stats.as_dict()  # type: ignore[attr-defined]
    for rewards, want in zip(answers, expected, strict=True):
        assert flat(rewards) == pytest.approx(flat(want), abs=1e-9)


# -- the trainer routes, one sample a call as the trainers' clients send it ------------------


async def route_step(
    url: str, batch: list[list[dict[str, Any]]], route: str, grouped: bool, opponents: int | str
) -> tuple[list[list[float]], Counter[int]]:
    """Every sample of the step posted at once, one a call, with the trainers' retries."""
    query = QUERY + (f"&group_size={G}&opponents={opponents}" if grouped else "")
    refusals: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def sample(group: dict[str, Any], completion: str) -> float:
            if route == "openrlhf":
                body: dict[str, Any] = {
                    "query": [group["prompt"] + completion + "<|im_end|>"],
                    "prompts": [group["prompt"]],
                    "labels": [group["reference"]],
                }
            else:
                body = {
                    "prompt": group["prompt"],
                    "response": completion,
                    "label": group["reference"],
                }
            answer = (
                await post_retrying(http, f"/v1/rewards/{route}?{query}", body, refusals)
            ).json()
            if route == "openrlhf":
                assert answer["extra_logs"]["cai_judge_fallback"] == [0.0], answer
                reward: float = answer["rewards"][0]
                return reward
            assert isinstance(answer, float), answer
            return answer

        async def worker(groups: list[dict[str, Any]]) -> list[list[float]]:
            flat_rewards = await asyncio.gather(
                *(sample(g, c) for g in groups for c in g["completions"])
            )
            return [list(flat_rewards[i : i + G]) for i in range(0, len(flat_rewards), G)]

        answers = await asyncio.gather(*(worker(groups) for groups in batch))
    return [flat(a) for a in answers], refusals


@pytest.mark.parametrize("route", ["openrlhf", "slime"])
@pytest.mark.parametrize("grouped", [False, True], ids=["reference", "group_size"])
async def test_trainer_routes_judge_every_sample(server: Any, route: str, grouped: bool) -> None:
    """Half the prompts of the adapters' step (192 calls at once): four of these run, and
    each call is a request of its own, so the fast tier stays fast."""
    batch = step(prompts=PROMPTS // 2)
    with server() as url:
        got, refusals = await route_step(url, batch, route, grouped, "all")
        expected = [
            await (direct_groups(url, groups) if grouped else direct_items(url, groups))
            for groups in batch
        ]
    assert refusals == Counter()  # within the defaults' capacity and rate limit
    for rewards, want in zip(got, expected, strict=True):
        assert rewards == pytest.approx(flat(want), abs=1e-9)


# -- past capacity ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["openrlhf", "slime"])
@pytest.mark.parametrize("grouped", [False, True], ids=["reference", "group_size"])
async def test_past_capacity_trainer_routes_refuse_with_retry_after_then_judge(
    server: Any, route: str, grouped: bool
) -> None:
    """A queue of one group's units (28 pairs × K × 2) on a slow engine: the samples over it
    are answered 503 with Retry-After, the trainers' clients retry, and every reward in the
    end is judged. Round robin, whose rewards do not depend on the order the samples arrive
    in (an m-opponent schedule is seeded by slot, and a retried group's slots are reshuffled)."""
    batch = step(workers=2, prompts=3)
    with server(unit_delay_s=0.005, max_queued_units=28 * K * 2, retry_after_s=1) as url:
        got, refusals = await route_step(url, batch, route, grouped, "all")
        expected = [
            await (direct_groups(url, groups) if grouped else direct_items(url, groups))
            for groups in batch
        ]
    assert refusals[503] > 0  # the step was past capacity: the test saw the refusals
    for rewards, want in zip(got, expected, strict=True):
        assert rewards == pytest.approx(flat(want), abs=1e-9)


async def test_past_capacity_trl_workers_retry_and_are_all_judged(server: Any) -> None:
    """The step is twice the queue: two workers' requests fit, the others' are refused 503
    and retried within the deadline; no fallback."""
    batch = step(prompts=3)
    units = 3 * 28 * K * 2  # one worker's step: 3 groups × 28 pairs × K × 2 orders
    with server(unit_delay_s=0.002, max_queued_units=2 * units, retry_after_s=1) as url:
        funcs = [
            group_reward_func(
                sdk.AsyncCaiJudge(base_url=url),
                num_generations=G,
                constitution="harmless",
                principles=K,
            )
            for _ in batch
        ]

        async def worker(reward: Any, groups: list[dict[str, Any]]) -> list[float]:
            prompts = [g["prompt"] for g in groups for _ in g["completions"]]
            completions = [c for g in groups for c in g["completions"]]
            rewards: list[float] = await reward(prompts=prompts, completions=completions)
            return rewards

        answers = await asyncio.gather(*(worker(f, g) for f, g in zip(funcs, batch, strict=True)))
        expected = [await direct_groups(url, groups) for groups in batch]
    assert sum(f.stats.retries for f in funcs) > 0  # type: ignore[attr-defined]
    for reward, rewards, want in zip(funcs, answers, expected, strict=True):
        assert (reward.stats.judged, reward.stats.fallbacks) == (3 * G, 0), reward.stats.as_dict()  # type: ignore[attr-defined]
        assert rewards == pytest.approx(flat(want), abs=1e-9)


async def test_past_the_deadline_every_reward_is_judged_or_counted(server: Any) -> None:
    """A deadline the slow judge cannot meet for all of the step: what was not judged in time
    is a counted fallback (the TRL adapter's stats and logged metrics), never a silent one."""
    batch = step(prompts=3)
    units = 3 * 28 * K * 2
    with server(unit_delay_s=0.004, max_queued_units=units, retry_after_s=1) as url:
        funcs = [
            group_reward_func(
                sdk.AsyncCaiJudge(base_url=url),
                num_generations=G,
                deadline=2.5,
                constitution="harmless",
                principles=K,
            )
            for _ in batch
        ]
        logged: list[dict[str, float]] = [{} for _ in batch]

        async def worker(
            reward: Any, groups: list[dict[str, Any]], metrics: dict[str, float]
        ) -> list[float]:
            prompts = [g["prompt"] for g in groups for _ in g["completions"]]
            completions = [c for g in groups for c in g["completions"]]
            rewards: list[float] = await reward(
                prompts=prompts, completions=completions, log_metric=metrics.__setitem__
            )
            return rewards

        answers = await asyncio.gather(
            *(worker(f, g, m) for f, g, m in zip(funcs, batch, logged, strict=True))
        )
        expected = [await direct_groups(url, groups) for groups in batch]
    counted = [f.stats.fallbacks for f in funcs]  # type: ignore[attr-defined]
    assert sum(counted) > 0  # the deadline cut the step: the test saw fallbacks
    assert sum(f.stats.judged for f in funcs) > 0  # type: ignore[attr-defined]
    for rewards, want, fallbacks, metrics in zip(answers, expected, counted, logged, strict=True):
        judged = judged_or_counted(rewards, flat(want), fallbacks)
        assert judged + fallbacks == len(rewards)
        assert metrics["cai_judge/fallbacks"] == fallbacks
