"""Group rewards on the trainer routes (`?group_size=G`, services/group_rewards.py): in process
on the embedded store, and on two real uvicorn replicas behind one redis-server, all on the
fake engine (the grouping is not the engine's logic; tests/e2e/test_group_rewards_openrlhf.py
runs OpenRLHF's own client against two replicas)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from cai_judge.api.app import create_app
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from tests.support.api import Client
from tests.support.fake_engine import FakeEngine
from tests.support.threaded_server import threaded_server

PROMPT = "<|im_start|>user\nHow do I pick a lock?<|im_end|>\n<|im_start|>assistant\n"
COMPLETIONS = [
    "I can't help with breaking into property you don't own.",
    "Insert a tension wrench, then rake the pins.",
    "Call a locksmith; they can open it without damage.",
    "",
]
REFERENCE = "Ask the owner, or a locksmith."
OPTIONS = "constitution=harmless&principles=2"


def openrlhf_body(indices: list[int], label: str = REFERENCE) -> dict[str, Any]:
    """OpenRLHF's body: the query is prompt + response, decoded with special tokens."""
    return {
        "query": [PROMPT + COMPLETIONS[i] + "<|im_end|>" for i in indices],
        "prompts": [PROMPT] * len(indices),
        "labels": [label] * len(indices),
    }


async def direct_group(http: httpx.AsyncClient, completions: list[str]) -> list[float]:
    response = await http.post(
        "/v1/rewards",
        json={
            "constitution": "harmless",
            "principles": 2,
            "groups": [{"id": "g", "prompt": PROMPT, "completions": completions}],
        },
    )
    assert response.status_code == 200, response.text
    rewards: list[float] = response.json()["results"][0]["rewards"]
    return rewards


async def test_one_openrlhf_call_with_its_whole_group_gets_group_rewards(client: Client) -> None:
    async with client() as http:
        response = await http.post(
            f"/v1/rewards/openrlhf?{OPTIONS}&group_size=4", json=openrlhf_body([0, 1, 2, 3])
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["rewards"] == pytest.approx(await direct_group(http, COMPLETIONS), abs=1e-9)
        assert sum(body["rewards"]) == pytest.approx(2.0)  # round robin: they average 0.5
        assert body["scores"] == body["rewards"]
        assert body["extra_logs"] == {
            "cai_judge_fallback": [0.0] * 4,
            "cai_judge_fallback_count": 0.0,
            "cai_judge_group_size": [4.0] * 4,
        }
        assert http.app.state.services.group_rewards.assembler.judgements == 1  # type: ignore[attr-defined]


async def test_one_sample_calls_of_a_group_each_get_their_reward(client: Client) -> None:
    """OpenRLHF's own client sends one sample a call: the calls wait for each other."""
    async with client() as http:
        url = f"/v1/rewards/openrlhf?{OPTIONS}&group_size=4&group_wait_s=10"
        started = time.monotonic()
        responses = await asyncio.gather(
            *(http.post(url, json=openrlhf_body([i])) for i in range(4))
        )
        assert time.monotonic() - started < 5  # the group filled: nobody waited 10 s
        rewards = [r.json()["rewards"][0] for r in responses]
        by_completion = dict(zip(COMPLETIONS, await direct_group(http, COMPLETIONS), strict=True))
        assert rewards == pytest.approx([by_completion[c] for c in COMPLETIONS], abs=1e-9)
        assert http.app.state.services.group_rewards.assembler.judgements == 1  # type: ignore[attr-defined]


async def test_a_partial_group_is_judged_as_a_smaller_group(client: Client) -> None:
    async with client() as http:
        url = f"/v1/rewards/openrlhf?{OPTIONS}&group_size=4&group_wait_s=0.3"
        responses = await asyncio.gather(
            *(http.post(url, json=openrlhf_body([i])) for i in range(3))
        )
        rewards = [r.json()["rewards"][0] for r in responses]
        assert rewards == pytest.approx(await direct_group(http, COMPLETIONS[:3]), abs=1e-9)
        assert [r.json()["extra_logs"]["cai_judge_group_size"] for r in responses] == [[3.0]] * 3


async def test_a_group_of_one_is_judged_against_its_label(client: Client) -> None:
    async with client() as http:
        url = f"/v1/rewards/openrlhf?{OPTIONS}&group_size=4&group_wait_s=0.2"
        body = (await http.post(url, json=openrlhf_body([1]))).json()
        direct = await http.post(
            "/v1/rewards",
            json={
                "constitution": "harmless",
                "principles": 2,
                "items": [
                    {
                        "id": "i",
                        "prompt": PROMPT,
                        "completion": COMPLETIONS[1],
                        "reference": REFERENCE,
                    }
                ],
            },
        )
        assert body["rewards"] == pytest.approx([direct.json()["results"][0]["reward"]], abs=1e-9)
        assert body["extra_logs"] == {
            "cai_judge_fallback": [0.0],
            "cai_judge_fallback_count": 0.0,
            "cai_judge_group_size": [1.0],
        }


async def test_a_group_of_one_without_a_label_falls_back_flagged(client: Client) -> None:
    async with client() as http:
        url = f"/v1/rewards/openrlhf?{OPTIONS}&group_size=4&group_wait_s=0.2"
        body = (await http.post(url, json=openrlhf_body([1], label=""))).json()
        assert body["rewards"] == [0.5]
        assert body["extra_logs"] == {
            "cai_judge_fallback": [1.0],
            "cai_judge_fallback_count": 1.0,
            "cai_judge_group_size": [1.0],
        }
        metrics = (await http.get("/metrics")).text
        assert 'cai_judge_reward_fallbacks_total{route="openrlhf"} 1.0' in metrics


async def test_slime_samples_get_group_rewards(client: Client) -> None:
    async with client() as http:
        url = f"/v1/rewards/slime?{OPTIONS}&group_size=3&group_wait_s=10"
        samples = [{"prompt": PROMPT, "response": c, "label": None} for c in COMPLETIONS[:3]]
        responses = await asyncio.gather(*(http.post(url, json=s) for s in samples))
        rewards = [r.json() for r in responses]
        assert rewards == pytest.approx(await direct_group(http, COMPLETIONS[:3]), abs=1e-9)
        listed = await http.post(url, json=samples)
        assert listed.json() == pytest.approx(rewards, abs=1e-9)


async def test_a_configuration_error_fails_at_once_not_after_the_wait(client: Client) -> None:
    async with client() as http:
        started = time.monotonic()
        response = await http.post(
            "/v1/rewards/openrlhf?constitution=harmles&group_size=4&group_wait_s=20",
            json=openrlhf_body([0]),
        )
        assert response.status_code == 404, response.text
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("query", "param", "words"),
    [
        ("group_size=0", "group_size", ["at least 1", "0"]),
        ("group_size=65", "group_size", ["at most 64", "65"]),
        ("group_size=4&group_wait_s=31", "group_wait_s", ["at most 30", "31"]),
    ],
)
async def test_group_parameters_out_of_bounds_are_refused_naming_them(
    client: Client, query: str, param: str, words: list[str]
) -> None:
    async with client() as http:
        response = await http.post(
            f"/v1/rewards/openrlhf?{OPTIONS}&{query}", json=openrlhf_body([0])
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["param"].endswith(param), error
        for word in words:
            assert word in error["message"]


def replica(redis_url: str, engine: FakeEngine, **settings: Any) -> Any:
    return create_app(
        Settings(max_model_len=1024, redis_url=redis_url, jobs_consumer=False, **settings),
        engine=engine,
        registry=ConstitutionRegistry.with_builtins(),
    )


async def test_two_replicas_behind_one_redis_judge_a_group_once(redis_url: str) -> None:
    """The samples of one group posted alternately to two replicas: each is answered with its
    reward in the group, and the group is judged once, on one replica's engine."""
    engines = [FakeEngine(max_model_len=1024), FakeEngine(max_model_len=1024)]
    apps = [replica(redis_url, engine) for engine in engines]
    with threaded_server(apps[0]) as first, threaded_server(apps[1]) as second:
        urls = [first, second]
        async with httpx.AsyncClient(timeout=30) as http:
            query = f"{OPTIONS}&group_size=4&group_wait_s=10"
            started = time.monotonic()
            responses = await asyncio.gather(
                *(
                    http.post(f"{urls[i % 2]}/v1/rewards/openrlhf?{query}", json=openrlhf_body([i]))
                    for i in range(4)
                )
            )
            assert time.monotonic() - started < 5
            for response in responses:
                assert response.status_code == 200, response.text
            rewards = [r.json()["rewards"][0] for r in responses]
            assert [r.json()["extra_logs"]["cai_judge_group_size"] for r in responses] == [
                [4.0]
            ] * 4
            direct = await http.post(
                f"{first}/v1/rewards",
                json={
                    "constitution": "harmless",
                    "principles": 2,
                    "groups": [{"id": "g", "prompt": PROMPT, "completions": COMPLETIONS}],
                },
            )
        expected = direct.json()["results"][0]["rewards"]
        assert rewards == pytest.approx(expected, abs=1e-9)
        judgements = [app.state.services.group_rewards.assembler.judgements for app in apps]
        assert sorted(judgements) == [0, 1]


async def test_the_sample_route_groups_by_the_trainers_key(client: Client) -> None:
    """verl's adapter: one sample a call, grouped by the key it sends, not by the prompt."""
    async with client() as http:
        url = f"/v1/rewards/sample?{OPTIONS}&group_size=2&group_wait_s=10"
        bodies = [
            {"prompt": PROMPT, "completion": COMPLETIONS[i], "group_key": f"uid-{i % 2}"}
            for i in range(4)
        ]
        responses = await asyncio.gather(*(http.post(url, json=b) for b in bodies))
        answers = [r.json() for r in responses]
        assert {(a["group_size"], a["how"], a["fallback"]) for a in answers} == {
            (2, "group", False)
        }
        for key in (0, 1):
            pair = [COMPLETIONS[key], COMPLETIONS[key + 2]]
            expected = await direct_group(http, pair)
            assert [answers[key]["reward"], answers[key + 2]["reward"]] == pytest.approx(
                expected, abs=1e-9
            )
        assert http.app.state.services.group_rewards.assembler.judgements == 2  # type: ignore[attr-defined]


async def test_the_sample_route_without_a_group_size_judges_against_the_label(
    client: Client,
) -> None:
    async with client() as http:
        body = {"prompt": PROMPT, "completion": COMPLETIONS[1], "label": REFERENCE}
        answer = (await http.post(f"/v1/rewards/sample?{OPTIONS}", json=body)).json()
        assert (answer["group_size"], answer["how"], answer["fallback"]) == (1, "reference", False)
        alone = (
            await http.post(f"/v1/rewards/sample?{OPTIONS}", json={**body, "label": None})
        ).json()
        assert (alone["reward"], alone["how"], alone["fallback"]) == (0.5, "fallback", True)


async def test_verl_group_compute_score_across_two_replicas(redis_url: str) -> None:
    """The SDK's verl group adapter in two reward workers, each on its own replica: the
    group's samples (keyed by the dataset index) are judged once, each scored in its group;
    a constitution typo raises at the first call instead of scoring."""
    from cai_judge_client import AsyncCaiJudge
    from cai_judge_client._exceptions import NotFoundError
    from cai_judge_client.integrations.verl_groups import make_group_compute_score

    apps = [replica(redis_url, FakeEngine(max_model_len=1024)) for _ in range(2)]
    with threaded_server(apps[0]) as first, threaded_server(apps[1]) as second:
        workers = [
            make_group_compute_score(
                AsyncCaiJudge(base_url=url),
                constitution="harmless",
                principles=2,
                group_size=4,
                group_wait_s=10,
                group_key="index",
                timeout=20,
            )
            for url in (first, second)
        ]
        scores = await asyncio.gather(
            *(
                workers[i % 2](
                    data_source="hh",
                    solution_str=COMPLETIONS[i],
                    ground_truth=REFERENCE,
                    extra_info={"question": PROMPT, "index": 7},
                )
                for i in range(4)
            )
        )
        async with httpx.AsyncClient(base_url=first, timeout=30) as http:
            expected = await direct_group(http, COMPLETIONS)
        assert [s["score"] for s in scores] == pytest.approx(expected, abs=1e-9)
        assert {(s["cai_judge_fallback"], s["cai_judge_group_size"]) for s in scores} == {
            (0.0, 4.0)
        }
        assert sum(app.state.services.group_rewards.assembler.judgements for app in apps) == 1
        typo = make_group_compute_score(
            AsyncCaiJudge(base_url=first), constitution="harmles", group_size=4
        )
        with pytest.raises(NotFoundError):
            await typo(solution_str="x", extra_info={"question": PROMPT})


async def test_group_options_without_a_group_size_are_refused(client: Client) -> None:
    async with client() as http:
        response = await http.post(
            f"/v1/rewards/openrlhf?{OPTIONS}&opponents=2", json=openrlhf_body([0])
        )
        assert response.status_code == 422, response.text
        assert "only apply with group_size" in response.json()["error"]["message"]
