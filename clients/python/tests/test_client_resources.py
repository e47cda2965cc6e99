"""`client.labels`, `client.jobs`, `client.constitutions`, and the first release's flat
names as aliases of them, on both clients: each name sends the same request as its
resource call, and a `with_options()` copy's resources send with the copy's settings.
The calls' behaviour against a real server is in tests/test_sdk_live.py."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

import cai_judge_client as sdk
from sdk_support import BASE_URL, Judge, label_json, pairs
from test_client_jobs import status

ALIASES = {
    "label": "labels.create",
    "iter_label_dataset": "labels.iter_dataset",
    "label_dataset": "labels.create_dataset",
    "list_constitutions": "constitutions.list",
    "get_constitution": "constitutions.retrieve",
    "create_constitution": "constitutions.create",
    "submit_job": "jobs.create",
    "get_job": "jobs.retrieve",
    "cancel_job": "jobs.cancel",
    "list_jobs": "jobs.list",
    "wait_job": "jobs.wait",
    "iter_job_results": "jobs.iter_results",
}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_every_first_release_name_is_its_resource_call(kind: str) -> None:
    client = (sdk.CaiJudge if kind == "sync" else sdk.AsyncCaiJudge)(base_url=BASE_URL)
    for old, new in ALIASES.items():
        resource, method = new.split(".")
        assert getattr(client, old) == getattr(getattr(client, resource), method), old
    assert client.labels is client.labels  # one resource per client, built on first use


def answer(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)["pairs"]
    return httpx.Response(200, json={"labels": [label_json(p["id"]) for p in sent],
                                     "usage": {"pairs": len(sent)}})  # fmt: skip


async def test_label_and_labels_create_send_the_same_body(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(side_effect=answer)
        old = await judge("label", pairs(2), constitution="harmless", principles=1, mode="cot")
        new = await judge("labels.create", pairs(2), constitution="harmless", principles=1,
                          mode="cot")  # fmt: skip
    first, second = (json.loads(call.request.content) for call in route.calls)
    assert first == second and first["mode"] == "cot" and "calibrated" not in first
    assert old == new


async def test_a_misspelt_option_is_a_type_error_naming_it(judge: Judge) -> None:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as mock:
        route = mock.post("/v1/labels").mock(side_effect=answer)
        with pytest.raises(TypeError, match="aggregate"):
            await judge("labels.create", pairs(1), constitution="harmless", aggregate="mean")
    assert route.call_count == 0


async def test_jobs_and_constitutions_resources_reach_their_routes(judge: Judge) -> None:
    constitution = {
        "id": "harmless",
        "version": "v" * 64,
        "description": "d",
        "template": "t",
        "principles": [{"id": "less-harmful", "question": "Which is less harmful?"}],
    }
    with respx.mock(base_url=BASE_URL) as mock:
        mock.get("/v1/jobs/job-1").mock(
            return_value=httpx.Response(200, json=status("job-1", "succeeded", 2, 2))
        )
        mock.get("/v1/constitutions/harmless").mock(
            return_value=httpx.Response(200, json=constitution)
        )
        job = await judge("jobs.wait", "job-1", poll_interval=0.01, progress=False)
        found = await judge("constitutions.retrieve", "harmless")
    assert job.state == "succeeded" and found.id == "harmless"


async def test_a_copys_resources_send_with_the_copys_settings(judge: Judge) -> None:
    copy = judge.with_options(api_key="other-key")
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.get("/v1/jobs/job-2").mock(
            return_value=httpx.Response(200, json=status("job-2", "running", 2, 1))
        )
        await copy("jobs.retrieve", "job-2")
        await judge("jobs.retrieve", "job-2")
    keys = [call.request.headers["authorization"] for call in route.calls]
    assert keys == ["Bearer other-key", "Bearer k"]
