"""POST /v1/rewards and its trainer-shaped fronts against a real server (DESIGN.md §9).

One server per module on the tiny model (tests/test_server.py's `start_server`). The tiny
model's labels are noise, so these tests check the contract (shapes, order, provenance,
errors in place, limits) and the invariants that hold whatever the judge says: a
round-robin group averages 0.5, swapping two completions swaps their rewards, exchanging
completion and reference gives 1 − r. OpenRLHF's own HTTP reward client and verl's own
reward manager run against the server; slime, which cannot be installed here (it needs
sglang and Megatron), is pinned by a contract test of the exact request it sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from cai_judge.testing.service_process import ServiceProcess as Server
from cai_judge.testing.service_process import start_server, stop

pytestmark = pytest.mark.engine

PROMPT = "How do I pick a lock?"
COMPLETIONS = [
    "I can't help with breaking into property you don't own.",
    "Insert a tension wrench, then rake the pins.",
    "",  # an empty completion: a legitimate policy output, judged, never refused
    "Call a locksmith if it is your own lock.",
]
# The server's token budget: a round robin of 64 long completions is over it, the same
# group with 2 opponents each is not (the budget counts the units the schedule creates).
TOKEN_BUDGET = 150_000


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("rewards-server") / "server.log"
    running = start_server(
        tiny_model_dir,
        log,
        rate_limit="100000/minute",
        max_tokens_per_request=str(TOKEN_BUDGET),
    )
    yield running
    stop(running)


def post(server: Server, body: dict[str, Any], path: str = "/v1/rewards", **kw: Any) -> Any:
    answer = httpx.post(f"{server.url}{path}", json=body, timeout=300, **kw)
    return answer


def rewards(server: Server, **body: Any) -> dict[str, Any]:
    answer = post(server, {"constitution": "harmless", "principles": 2, **body})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_group_round_robin_judges_every_completion_empty_ones_included(server: Server) -> None:
    before = server.metric('cai_judge_reward_requests_total{mode="group"}')
    body = rewards(
        server,
        groups=[
            {"id": "g1", "prompt": PROMPT, "completions": COMPLETIONS},
            {"id": "g2", "prompt": [{"role": "user", "content": "Hi?"}], "completions": ["", ""]},
        ],
    )
    first, second = body["results"]
    assert [first["id"], second["id"]] == ["g1", "g2"]
    assert "error" not in first and "error" not in second, body
    assert len(first["rewards"]) == 4
    assert sum(first["rewards"]) / 4 == pytest.approx(0.5, abs=1e-9)
    # Two identical empty completions: one match with itself's text on both sides.
    assert second["rewards"] == pytest.approx([0.5, 0.5], abs=1e-6)
    provenance = first["provenance"]
    assert provenance["constitution"]["id"] == "harmless"
    assert provenance["template"]["version"] and provenance["model"]
    assert len(provenance["principles"]) >= 2 and provenance["seed"] == 0
    assert body["usage"]["pairs"] == 6 + 1
    assert server.metric('cai_judge_reward_requests_total{mode="group"}') == before + 1


def test_swapping_two_completions_swaps_their_rewards(server: Server) -> None:
    swapped = [COMPLETIONS[1], COMPLETIONS[0], *COMPLETIONS[2:]]
    body = rewards(
        server,
        groups=[
            {"id": "a", "prompt": PROMPT, "completions": COMPLETIONS},
            {"id": "b", "prompt": PROMPT, "completions": swapped},
        ],
    )
    a, b = (r["rewards"] for r in body["results"])
    assert b == pytest.approx([a[1], a[0], a[2], a[3]], abs=1e-9)


def test_reference_mode_exchanged_gives_one_minus_r(server: Server) -> None:
    body = rewards(
        server,
        items=[
            {
                "id": "x",
                "prompt": PROMPT,
                "completion": COMPLETIONS[1],
                "reference": COMPLETIONS[0],
            },
            {
                "id": "y",
                "prompt": PROMPT,
                "completion": COMPLETIONS[0],
                "reference": COMPLETIONS[1],
            },
            {"id": "z", "prompt": PROMPT, "completion": "", "reference": COMPLETIONS[0]},
        ],
        detail=True,
    )
    x, y, z = body["results"]
    assert 0.0 < x["reward"] < 1.0
    assert x["reward"] + y["reward"] == pytest.approx(1.0, abs=1e-9)
    assert "error" not in z  # an empty completion against a reference is judged
    [match] = x["detail"]["matches"]
    assert match["opponent"] == "reference" and match["outcome"] == x["reward"]


def test_m_opponents_detail_and_bradley_terry(server: Server) -> None:
    group = {"id": "g", "prompt": PROMPT, "completions": [f"Answer {i}." for i in range(6)]}
    body = rewards(server, groups=[group], opponents=2, detail=True)
    [result] = body["results"]
    assert body["usage"]["pairs"] == 6  # G·m/2
    assert all(len(d["matches"]) == 2 for d in result["detail"])
    for index, detail in enumerate(result["detail"]):
        outcomes = [m["outcome"] for m in detail["matches"]]
        assert result["rewards"][index] == pytest.approx(sum(outcomes) / 2)
        assert 0.0 <= detail["consistency"] <= 1.0
    fitted = rewards(server, groups=[group], opponents=2, scoring="bradley_terry")
    strengths = fitted["results"][0]["rewards"]
    assert sum(strengths) == pytest.approx(0.0, abs=1e-9)


def test_bad_groups_are_reported_in_place_the_rest_judged(server: Server) -> None:
    body = rewards(
        server,
        opponents=3,
        groups=[
            {"id": "ok", "prompt": PROMPT, "completions": COMPLETIONS},
            {"id": "one", "prompt": PROMPT, "completions": ["alone"]},
            {"id": "odd", "prompt": PROMPT, "completions": ["a", "b", "c", "d", "e"]},
        ],
    )
    ok, one, odd = body["results"]
    assert len(ok["rewards"]) == 4
    assert one["index"] == 1 and one["error"]["param"] == "groups.1.completions"
    assert odd["index"] == 2 and odd["error"]["param"] == "opponents"
    assert "5·3/2" in odd["error"]["message"]


def test_a_request_with_both_lists_is_refused_in_the_envelope(server: Server) -> None:
    answer = post(
        server,
        {
            "constitution": "harmless",
            "groups": [{"id": "g", "prompt": PROMPT, "completions": COMPLETIONS}],
            "items": [{"id": "i", "prompt": PROMPT, "completion": "a", "reference": "b"}],
        },
    )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert "groups" in error["message"] and "items" in error["message"]


def test_the_token_budget_counts_the_units_the_schedule_creates(server: Server) -> None:
    group = {
        "id": "big",
        "prompt": PROMPT,
        "completions": [f"Completion {i}: " + "with many words " * 12 for i in range(64)],
    }
    # Round robin: 2,016 pairs, over the pair limit from the group's shape alone.
    refused = post(server, {"constitution": "harmless", "principles": 1, "groups": [group]})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["param"] == "groups.0.completions" and "2016 pairs" in error["message"]
    # 8 opponents: 256 pairs fit the shape, and their rendered units pass the token budget.
    over = post(
        server, {"constitution": "harmless", "principles": 1, "opponents": 8, "groups": [group]}
    )
    assert over.status_code == 422, over.text
    error = over.json()["error"]
    assert error["param"] == "groups" and f"limit of {TOKEN_BUDGET}" in error["message"]
    body = rewards(server, principles=1, opponents=2, groups=[group])
    assert body["usage"]["pairs"] == 64 and len(body["results"][0]["rewards"]) == 64


def test_an_oversized_group_is_refused_at_once_and_labels_go_on_meanwhile(server: Server) -> None:
    """Issue 28 on a real server: a 64-completion round robin on every principle (2,016
    pairs, 64,512 score units) held a replica for 2 minutes and /v1/labels for 49 s before
    its 422. Now it is refused from its shape, and a one-pair label sent with it is
    answered as fast as alone."""
    pair = {"id": "p", "prompt": PROMPT, "response_a": COMPLETIONS[0],
            "response_b": COMPLETIONS[1]}  # fmt: skip
    label_body = {"constitution": "harmless", "principles": 2, "pairs": [pair]}
    post(server, label_body, path="/v1/labels")  # warm: the timing below is not a first call
    began = time.perf_counter()
    assert post(server, label_body, path="/v1/labels").status_code == 200
    alone = time.perf_counter() - began
    group = {"id": "big", "prompt": PROMPT,
             "completions": [f"Completion {i}: " + "word " * 20 for i in range(64)]}  # fmt: skip

    def timed(body: dict[str, Any], path: str) -> tuple[httpx.Response, float]:
        began = time.perf_counter()
        answer = post(server, body, path=path)
        return answer, time.perf_counter() - began

    with ThreadPoolExecutor(2) as pool:
        big = pool.submit(timed, {"constitution": "harmless", "groups": [group]}, "/v1/rewards")
        small = pool.submit(timed, {**label_body, "seed": 1}, "/v1/labels")
        (refused, refused_s), (labeled, labeled_s) = big.result(), small.result()
    print(f"refused in {refused_s:.3f} s; /v1/labels {labeled_s:.3f} s (alone {alone:.3f} s)")
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["param"] == "groups.0.completions"
    assert "64512 score units" in refused.json()["error"]["message"]
    assert refused_s < 2.0
    assert labeled.status_code == 200, labeled.text
    assert labeled_s < max(2.0, 3 * alone)


def test_openrlhf_own_http_client_gets_a_reward(server: Server) -> None:
    """OpenRLHF 0.11.2's own client (openrlhf/utils/agent.py,
    `SingleTurnAgentExecutor._fetch_rewards_via_http`): POST {query, prompts, labels}, one
    sample, 180 s, reading {rewards, scores, extra_logs}. Its query is prompt + response
    decoded with special tokens; the service splits and strips it."""
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    url = f"{server.url}/v1/rewards/openrlhf?constitution=harmless&principles=2"
    executor = SingleTurnAgentExecutor(url)
    prompt = "<|im_start|>user\nHow do I pick a lock?<|im_end|>\n<|im_start|>assistant\n"
    query = prompt + COMPLETIONS[1] + "<|im_end|>"
    [answer] = asyncio.run(executor._fetch_rewards_via_http([query], [prompt], [COMPLETIONS[0]]))
    [reward] = answer["rewards"]
    assert answer["scores"] == [reward]
    assert answer["extra_logs"] == {"cai_judge_fallback": [0.0], "cai_judge_fallback_count": 0.0}
    direct = rewards(
        server,
        items=[{"id": "d", "prompt": prompt, "completion": COMPLETIONS[1],
                "reference": COMPLETIONS[0]}],
    )  # fmt: skip
    assert reward == pytest.approx(direct["results"][0]["reward"], abs=1e-9)


def test_openrlhf_route_names_an_item_the_engine_cannot_judge(server: Server) -> None:
    """Issue 28: this answered 200 and a fallback of 0.5, a value OpenRLHF trained on. A
    sample the judge cannot take (here over the text limit) is the caller's to see: 422
    naming it."""
    before = server.metric('cai_judge_reward_fallbacks_total{route="openrlhf"}')
    answer = post(
        server,
        {"query": ["p" + "x" * 300_000], "prompts": ["p"], "labels": ["ref"]},
        path="/v1/rewards/openrlhf?constitution=harmless",
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["param"] == "query.0"
    assert "at most 200000 characters" in answer.json()["error"]["message"]
    assert server.metric('cai_judge_reward_fallbacks_total{route="openrlhf"}') == before
    # OpenRLHF may send empty lists: answered in its shape, nothing judged.
    empty = post(
        server, {"query": [], "prompts": [], "labels": []},
        path="/v1/rewards/openrlhf?constitution=harmless",
    )  # fmt: skip
    assert empty.status_code == 200, empty.text
    assert empty.json() == {
        "rewards": [],
        "scores": [],
        "extra_logs": {"cai_judge_fallback": [], "cai_judge_fallback_count": 0.0},
    }


def test_slime_remote_rm_request(server: Server) -> None:
    """slime (THUDM/slime at 624b824a, slime/rollout/rm_hub/__init__.py, `remote_rm`) POSTs
    `{"prompt": sample.prompt, "response": sample.response, "label": sample.label}` with
    aiohttp to `--rm-url` and takes the JSON answer as the reward. slime cannot be installed
    here (sglang, Megatron), so this sends exactly that request with aiohttp, as it does."""
    import aiohttp

    url = f"{server.url}/v1/rewards/slime?constitution=harmless&principles=2"
    payload = {"prompt": PROMPT, "response": COMPLETIONS[1], "label": COMPLETIONS[0]}

    async def remote_rm() -> Any:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:  # noqa: SIM117 (slime's own code)
            async with session.post(url, json=payload) as resp:
                resp.raise_for_status()
                return await resp.json()

    reward = asyncio.run(remote_rm())
    assert isinstance(reward, float) and 0.0 < reward < 1.0
    batch = post(
        server, [payload, payload], path="/v1/rewards/slime?constitution=harmless&principles=2"
    )
    assert batch.json() == [reward, reward]


def test_verl_reward_loop_calls_the_sdk_compute_score(server: Server, tiny_model_dir: Path) -> None:
    """verl 0.9.1's reward loop manager (verl/experimental/reward_loop/reward_manager/naive.py)
    awaits an async compute_score once per sample with the decoded response, the ground
    truth and the dataset's extra_info; the SDK's compute_score judges it against the ground
    truth, the prompt taken from extra_info."""
    import numpy as np
    import torch
    from tensordict import TensorDict
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    import cai_judge_client as sdk
    from cai_judge_client.integrations.verl import make_compute_score

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    response_ids = tokenizer.encode(COMPLETIONS[1])
    prompt_ids = tokenizer.encode(PROMPT)
    batch = TensorDict(
        {
            "prompts": torch.tensor([prompt_ids]),
            "responses": torch.tensor([response_ids]),
            "attention_mask": torch.ones(1, len(prompt_ids) + len(response_ids), dtype=torch.long),
        },
        batch_size=[1],
    )
    data = DataProto(
        batch=batch,
        non_tensor_batch={
            "data_source": np.array(["hh"], dtype=object),
            "reward_model": np.array([{"ground_truth": COMPLETIONS[0]}], dtype=object),
            "extra_info": np.array([{"question": PROMPT}], dtype=object),
        },
    )

    async def run() -> dict[str, Any]:
        client = sdk.AsyncCaiJudge(base_url=server.url)
        compute_score = make_compute_score(client, constitution="harmless", principles=2)
        manager = NaiveRewardManager(None, tokenizer, compute_score)
        try:
            return await manager.run_single(data)
        finally:
            await client.close()

    result = asyncio.run(run())
    direct = rewards(
        server,
        items=[{"id": "v", "prompt": PROMPT, "completion": tokenizer.decode(
            response_ids, skip_special_tokens=True), "reference": COMPLETIONS[0]}],
    )  # fmt: skip
    assert result["reward_score"] == pytest.approx(direct["results"][0]["reward"], abs=1e-9)
    assert result["reward_extra_info"]["cai_judge_fallback"] == 0.0
