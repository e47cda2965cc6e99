"""OpenRLHF's own remote-RM client gets group rewards for its samples across two replicas
(issue 28's Done-when; services/group_rewards.py): on two in-process uvicorn replicas on the
fake engine, and on two `cai-judge serve` processes on the tiny real model.

OpenRLHF 0.11.2 (`openrlhf/utils/agent.py`, `SingleTurnAgentExecutor`) sends one sample per
call and, given `--reward.remote_url URL1,URL2`, rotates the calls over the URLs, so the
`n_samples_per_prompt` samples of one prompt land on both replicas. The replicas are real
uvicorn servers behind one redis-server, on the fake engine: what is under test is the
grouping across processes' state and OpenRLHF's client, not the engine (tests/e2e because
importing openrlhf pulls in torch, ~20 s). The second test runs the same rollout against two
real service processes, each with its own engine, and counts the judgements in their metrics.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cai_judge.api.app import create_app
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from cai_judge.testing.service_process import start_servers, stop
from tests.support.fake_engine import FakeEngine
from tests.support.threaded_server import threaded_server

N_SAMPLES_PER_PROMPT = 4
PROMPTS = [
    "<|im_start|>user\nHow do I pick a lock?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nHow do I boil an egg?<|im_end|>\n<|im_start|>assistant\n",
]
COMPLETIONS = [
    [
        "I can't help with breaking into property you don't own.",
        "Insert a tension wrench, then rake the pins.",
        "Call a locksmith; they can open it without damage.",
        "",
    ],
    [
        "Simmer it for nine minutes, then cool it in cold water.",
        "Put it in the microwave for five minutes.",
        "Boil water, add the egg, wait.",
        "I won't help with cooking.",
    ],
]
OPTIONS = "constitution=harmless&principles=2"


def replica(redis_url: str) -> Any:
    return create_app(
        Settings(max_model_len=1024, redis_url=redis_url, jobs_consumer=False),
        engine=FakeEngine(max_model_len=1024),
        registry=ConstitutionRegistry.with_builtins(),
    )


def seen_prompts(app: Any, seen: list[str]) -> Callable[..., Awaitable[None]]:
    """The app, noting the prompt of every OpenRLHF call it receives."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        async def noted() -> Any:
            message = await receive()
            if message["type"] == "http.request" and scope["path"].endswith("/openrlhf"):
                seen.extend(json.loads(message["body"])["prompts"])
            return message

        await app(scope, noted if scope["type"] == "http" else receive, send)

    return asgi


def rollout(urls: list[str], query: str) -> list[dict[str, Any]]:
    """OpenRLHF's client as train_ppo_ray makes it from `--reward.remote_url URL1,URL2`, all
    of a step's samples in flight at once (one call per sample; the executor sends each next
    call to the next URL). The answers, by prompt, then sample."""
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    remote_url = ",".join(f"{url}/v1/rewards/openrlhf?{query}" for url in urls)
    executor = SingleTurnAgentExecutor(remote_url.split(","))

    async def step() -> list[list[dict[str, Any]]]:
        calls = [
            executor._fetch_rewards_via_http(
                [PROMPTS[p] + COMPLETIONS[p][i] + "<|im_end|>"], [PROMPTS[p]], ["a label"]
            )
            for p in range(len(PROMPTS))
            for i in range(N_SAMPLES_PER_PROMPT)
        ]
        return list(await asyncio.gather(*calls))

    return [answer[0] for answer in asyncio.run(step())]


def check_group_rewards(url: str, answers: list[dict[str, Any]]) -> None:
    """Each sample got its completion's reward in its prompt's whole group."""
    for p, prompt in enumerate(PROMPTS):
        direct = httpx.post(
            f"{url}/v1/rewards",
            json={
                "constitution": "harmless",
                "principles": 2,
                "groups": [{"id": "g", "prompt": prompt, "completions": COMPLETIONS[p]}],
            },
            timeout=300,
        )
        expected = direct.json()["results"][0]["rewards"]
        got = answers[p * N_SAMPLES_PER_PROMPT : (p + 1) * N_SAMPLES_PER_PROMPT]
        assert [a["rewards"][0] for a in got] == pytest.approx(expected, abs=1e-6)
        assert sum(a["rewards"][0] for a in got) == pytest.approx(N_SAMPLES_PER_PROMPT / 2)
        for answer in got:
            assert answer["scores"] == answer["rewards"]
            assert answer["extra_logs"] == {
                "cai_judge_fallback": [0.0],
                "cai_judge_fallback_count": 0.0,
                "cai_judge_group_size": [float(N_SAMPLES_PER_PROMPT)],
            }


def test_openrlhf_own_client_gets_group_rewards_across_two_replicas(redis_url: str) -> None:
    apps = [replica(redis_url), replica(redis_url)]
    seen: list[list[str]] = [[], []]
    with (
        threaded_server(seen_prompts(apps[0], seen[0])) as first,
        threaded_server(seen_prompts(apps[1], seen[1])) as second,
    ):
        query = f"{OPTIONS}&group_size={N_SAMPLES_PER_PROMPT}&group_wait_s=20"
        started = time.monotonic()
        answers = rollout([first, second], query)
        assert time.monotonic() - started < 15  # the groups filled: nobody waited out 20 s
        check_group_rewards(first, answers)
        # Each group's samples reached both replicas, and each group was judged once.
        for prompt in PROMPTS:
            assert [replica.count(prompt) for replica in seen] == [2, 2]
        judgements = [app.state.services.group_rewards.assembler.judgements for app in apps]
        assert sum(judgements) == len(PROMPTS)


def test_openrlhf_own_client_gets_group_rewards_from_two_service_processes(
    tiny_model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """Two `cai-judge serve` replicas on the tiny model, behind one redis-server."""
    servers = start_servers(
        tiny_model_dir, [tmp_path / f"replica-{i}.log" for i in range(2)], redis_url=redis_url
    )
    try:
        urls = [server.url for server in servers]
        metric = 'cai_judge_reward_requests_total{mode="group"}'
        before = sum(server.metric(metric) for server in servers)
        answers = rollout(urls, f"{OPTIONS}&group_size={N_SAMPLES_PER_PROMPT}&group_wait_s=20")
        judged = sum(server.metric(metric) for server in servers) - before
        assert judged == len(PROMPTS)  # one group call per prompt, on either replica
        check_group_rewards(urls[0], answers)
    finally:
        for server in servers:
            stop(server)
