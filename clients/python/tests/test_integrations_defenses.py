"""The reward defenses through every adapter (issue 32): `calibrated=True` and
`exploits="floor"` reach the wire of each trainer's path, and left at their defaults nothing
of them is sent, so a default request is what an older server accepts. A stub server
(httpx's MockTransport) records what each adapter sends through the SDK's real resources."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import cai_judge_client as sdk
from cai_judge_client.integrations.openrlhf import make_reward_func
from cai_judge_client.integrations.slime import make_group_rm
from cai_judge_client.integrations.trl import group_reward_func, reference_reward_func
from cai_judge_client.integrations.verl import make_compute_score
from cai_judge_client.integrations.verl_groups import make_group_compute_score
from sdk_support import BASE_URL

DEFENSES = {"calibrated": True, "exploits": "floor"}


class Recorder:
    """Answers `/v1/rewards` and `/v1/rewards/sample` in shape; keeps each request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/limits":  # an older server: the adapters plan without limits
            return httpx.Response(404, json={"error": {"type": "not_found", "message": "no",
                                                       "param": None}})  # fmt: skip
        if path.startswith("/v1/constitutions/"):
            principles = [{"id": f"p{i}", "question": "Which is better?"} for i in range(4)]
            return httpx.Response(200, json={"version": "v" * 64, "id": "harmless",
                                             "description": "", "template": "t",
                                             "principles": principles})  # fmt: skip
        body = json.loads(request.content)
        if path == "/v1/rewards/sample":
            return httpx.Response(
                200, json={"reward": 0.5, "fallback": False, "group_size": 1, "how": "group"}
            )
        if "groups" in body:
            results = [{"id": g["id"], "rewards": [0.5] * len(g["completions"])}
                       for g in body["groups"]]  # fmt: skip
        else:
            results = [{"id": i["id"], "reward": 0.5} for i in body["items"]]
        return httpx.Response(200, json={"results": results, "usage": {}})

    def sent(self) -> list[dict[str, Any]]:
        """Each rewards request's body, with its query parameters merged in."""
        found = []
        for request in self.requests:
            if request.url.path.startswith("/v1/rewards"):
                found.append({**json.loads(request.content), **dict(request.url.params)})
        return found


def client(recorder: Recorder) -> sdk.AsyncCaiJudge:
    transport = httpx.MockTransport(recorder)
    return sdk.AsyncCaiJudge(
        base_url=BASE_URL, api_key="k", http_client=httpx.AsyncClient(transport=transport)
    )


async def call_each_adapter(options: dict[str, Any]) -> Recorder:
    """One call through each async adapter with `options`."""
    recorder = Recorder()
    api = client(recorder)
    prompts, completions = ["p", "p"], ["a", "bb"]
    group = group_reward_func(api, num_generations=2, constitution="harmless", **options)
    await group(prompts=prompts, completions=completions)
    reference = reference_reward_func(
        api, reference_column="chosen", constitution="harmless", **options
    )
    await reference(prompts=prompts, completions=completions, chosen=["c", "c"])
    group_rm = make_group_rm(api, constitution="harmless", **options)
    await group_rm(SimpleNamespace(), [SimpleNamespace(prompt="p", response=c) for c in "ab"])
    compute_score = make_compute_score(api, constitution="harmless", **options)
    await compute_score(solution_str="a", ground_truth="c", extra_info={"question": "p"})
    grouped = make_group_compute_score(api, constitution="harmless", group_size=2, **options)
    await grouped(solution_str="a", ground_truth="c", extra_info={"question": "p"})
    return recorder


async def test_each_adapter_sends_calibrated_and_exploits() -> None:
    sent = (await call_each_adapter(DEFENSES)).sent()
    assert len(sent) == 5
    for body in sent[:4]:  # POST /v1/rewards
        assert (body["calibrated"], body["exploits"]) == (True, "floor"), body
    assert (sent[4]["calibrated"], sent[4]["exploits"]) == ("true", "floor")  # the query


async def test_defaults_send_neither() -> None:
    sent = (await call_each_adapter({})).sent()
    assert len(sent) == 5
    assert all("calibrated" not in body and "exploits" not in body for body in sent)


@pytest.mark.parametrize("options", [DEFENSES, {}])
def test_openrlhf_reward_func_sends_them_too(options: dict[str, Any]) -> None:
    recorder = Recorder()
    reward_func = make_reward_func(client(recorder), constitution="harmless", **options)
    reward_func(["q a"], ["q "], ["c"])
    [body] = recorder.sent()
    assert {k: body[k] for k in DEFENSES if k in body} == options
