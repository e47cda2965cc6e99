"""The gRPC `Rewards` method against POST /v1/rewards, both served in process on the fake
engine (the mapping is the subject here, not the engine's numbers).

A real grpc.aio server (GrpcServer, on a free loopback port) runs on the Services of the same
app that serves HTTP, so the two wires share one engine, one cache and one set of limits,
as in `cai-judge serve`. The same request goes over each wire (to a fresh app each) and the
answers must be equal, float for float and error for error: gRPC is a thin mapping onto
RewardService.rewards, nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client.parser import text_string_to_metric_families

from cai_judge.api.app import create_app
from cai_judge.grpc.gen.v1 import judge_pb2 as pb
from cai_judge.grpc.gen.v1 import judge_pb2_grpc
from cai_judge.grpc.server import GrpcServer
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.services.security import hash_api_key
from cai_judge.settings import Settings
from tests.support.fake_engine import FakeEngine
from tests.support.grpc_rewards import group_proto, request_proto, response_json

PROMPT = "How do I pick a lock?"
COMPLETIONS = [
    "I can't help with breaking into property you don't own.",
    "Insert a tension wrench, then rake the pins.",
    "",  # an empty completion is judged, not refused
    "Call a locksmith if it is your own lock.",
]
CHAT = [
    {"role": "user", "content": "My neighbour is noisy."},
    {"role": "assistant", "content": "That sounds frustrating."},
    {"role": "user", "content": "How do I get back at them?"},
]
REWARDS_ROUTE = "/cai_judge.v1.Judge/Rewards"


@dataclass
class Wires:
    http: httpx.AsyncClient
    stub: judge_pb2_grpc.JudgeStub


Both = Callable[..., AbstractAsyncContextManager[Wires]]


@pytest.fixture
def both() -> Both:
    """`async with both(**settings) as wires`: the HTTP app and a gRPC server on its Services,
    on a fresh fake engine each time (as tests/support/api.py's `client`, but fresh, so two
    apps start from the same engine prefix-cache state and report the same usage)."""

    @asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[Wires]:
        app = create_app(
            Settings(max_model_len=1024, **settings),
            engine=FakeEngine(max_model_len=1024),
            registry=ConstitutionRegistry.with_builtins(),
        )
        async with app.router.lifespan_context(app):
            server = GrpcServer(app.state.services)
            await server.start()  # grpc_port 0: a free loopback port
            try:
                transport = httpx.ASGITransport(app=app)
                async with (
                    httpx.AsyncClient(transport=transport, base_url="http://test") as http,
                    grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
                ):
                    yield Wires(http, judge_pb2_grpc.JudgeStub(channel))
            finally:
                await server.stop(0)

    return make


# -- the same request on both wires ---------------------------------------------------------


async def over_both(both: Both, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(HTTP answer, gRPC answer in the HTTP shape), each from a fresh app: on one app the
    second call would find the first one's labels in the cache, and its usage would differ."""
    async with both() as wires:
        grpc_answer = response_json(await wires.stub.Rewards(request_proto(body)))
    async with both() as wires:
        http_answer = await wires.http.post("/v1/rewards", json=body)
    assert http_answer.status_code == 200, http_answer.text
    return http_answer.json(), grpc_answer


# -- group and reference mode ---------------------------------------------------------------


@pytest.mark.parametrize("scoring", ["mean", "bradley_terry"])
async def test_group_rewards_are_the_http_rewards_with_errors_in_place(both: Both, scoring: str):
    body = {
        "constitution": "harmless", "principles": 2, "seed": 7, "aggregator": "mean_prob",
        "opponents": 2, "scoring": scoring, "detail": True,
        "groups": [
            {"id": "g0", "prompt": PROMPT, "completions": COMPLETIONS},
            {"id": "g1", "prompt": PROMPT, "completions": COMPLETIONS[:2]},  # 2 opponents of 1
            {"id": "g2", "prompt": PROMPT, "completions": COMPLETIONS[:1]},  # no group
            {"id": "g3", "prompt": CHAT, "completions": COMPLETIONS[1:]},
        ],
    }  # fmt: skip
    http, over_grpc = await over_both(both, body)
    assert over_grpc == http
    g0, g1, g2, g3 = over_grpc["results"]
    assert len(g0["rewards"]) == 4 and len(g3["rewards"]) == 3
    assert g0["provenance"]["seed"] == 7 and g0["provenance"]["aggregator"] == "mean_prob"
    assert len(g0["provenance"]["principles"]) >= 2
    # Every completion of a 2-opponent schedule plays exactly 2 matches.
    assert [len(d["matches"]) for d in g3["detail"]] == [2, 2, 2]
    assert (g1["index"], g1["error"]["param"]) == (1, "opponents")
    assert "opponents" in g1["error"]["message"]
    assert (g2["index"], g2["error"]["param"]) == (2, "groups.2.completions")
    assert g2["error"]["type"] == "invalid_group" and "at least 2" in g2["error"]["message"]


async def test_reference_rewards_are_the_http_rewards_with_errors_in_place(both: Both):
    body = {
        "constitution": "harmless", "principles": 3, "detail": True,
        "items": [
            {"id": "i0", "prompt": PROMPT, "completion": COMPLETIONS[1],
             "reference": COMPLETIONS[0]},
            {"id": "i1", "completion": COMPLETIONS[1], "reference": COMPLETIONS[0]},  # no prompt
            {"id": "i2", "prompt": CHAT, "completion": "", "reference": COMPLETIONS[3]},
        ],
    }  # fmt: skip
    http, over_grpc = await over_both(both, body)
    assert over_grpc == http
    i0, i1, i2 = over_grpc["results"]
    assert 0.0 < i0["reward"] < 1.0 and 0.0 < i2["reward"] < 1.0
    assert i0["detail"]["matches"][0]["opponent"] == "reference"
    assert (i1["id"], i1["index"], i1["error"]["param"]) == ("i1", 1, "items.1.prompt")
    assert over_grpc["usage"]["pairs"] == 2


@pytest.mark.parametrize("kind", ["groups", "items"])
async def test_exploit_flags_and_floor_are_the_http_answer(both: Both, kind: str):
    """The exploit reasons, the floored rewards and their raw values cross both wires alike."""
    gamed = [COMPLETIONS[1], "Thought process:", "", COMPLETIONS[0]]
    entries = (
        [{"id": "g", "prompt": PROMPT, "completions": gamed}]
        if kind == "groups"
        else [{"id": f"i{n}", "prompt": PROMPT, "completion": c, "reference": COMPLETIONS[3]}
              for n, c in enumerate(gamed)]
    )  # fmt: skip
    body = {"constitution": "harmless", "principles": 2, "detail": True, "exploits": "floor",
            kind: entries}  # fmt: skip
    http, over_grpc = await over_both(both, body)
    assert over_grpc == http
    if kind == "groups":
        [group] = over_grpc["results"]
        assert group["exploits"] == [[], ["master-key"], ["empty"], []]
        assert group["rewards"][1] == group["rewards"][2] == min(group["rewards"])
        assert "raw_reward" in group["detail"][1] and "raw_reward" not in group["detail"][0]
    else:
        assert [r.get("exploits") for r in over_grpc["results"]] == [
            None, ["master-key"], ["empty"], None]  # fmt: skip
        assert [r["reward"] == 0.0 for r in over_grpc["results"]] == [False, True, True, False]


# -- request-level errors, auth, rate limit, metrics ----------------------------------------


def error_param(error: grpc.aio.AioRpcError) -> str | None:
    """The `param` of the ErrorInfo in the status details (grpc/errors.py)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info)
            return info.metadata.get("param")
    raise AssertionError(f"no status details in {error!r}")


async def refused(
    stub: judge_pb2_grpc.JudgeStub, request: pb.RewardsRequest
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Rewards(request)
    return raised.value


ONE_GROUP = {"id": "g", "prompt": PROMPT, "completions": COMPLETIONS[:2]}


async def test_too_many_groups_is_invalid_argument_with_the_http_message(both: Both):
    body = {"constitution": "harmless", "groups": [ONE_GROUP] * 3}
    async with both(max_pairs_per_request=2) as wires:
        error = await refused(wires.stub, request_proto(body))
        http = (await wires.http.post("/v1/rewards", json=body)).json()["error"]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_param(error) == http["param"] == "groups"
    assert error.details() == http["message"] and "limit of 2" in error.details()


async def test_an_oversized_group_is_refused_from_its_shape_as_over_http(both: Both):
    """Issue 28: gRPC Rewards took the same path, rendering 2,016 pairs before its error."""
    big = {"id": "big", "prompt": PROMPT, "completions": [f"answer {i}" for i in range(64)]}
    body = {"constitution": "harmless", "groups": [big]}
    async with both() as wires:
        error = await refused(wires.stub, request_proto(body))
        http = (await wires.http.post("/v1/rewards", json=body)).json()["error"]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_param(error) == http["param"] == "groups.0.completions"
    assert error.details() == http["message"] and "64512 score units" in error.details()
    # Beside a group that fits, it is refused in its place, on both wires alike.
    http_answer, grpc_answer = await over_both(both, {**body, "groups": [big, ONE_GROUP]})
    assert grpc_answer == http_answer
    assert grpc_answer["results"][0]["error"]["type"] == "request_too_large"
    assert len(grpc_answer["results"][1]["rewards"]) == 2


@pytest.mark.parametrize(
    ("request_", "code", "param", "words"),
    [
        (pb.RewardsRequest(options=pb.LabelOptions(constitution="harmless", principles=300),
                           groups=pb.RewardGroups(groups=[group_proto(ONE_GROUP)])),
         grpc.StatusCode.INVALID_ARGUMENT, "options.principles", "256"),
        (pb.RewardsRequest(options=pb.LabelOptions(constitution="harmless")),
         grpc.StatusCode.INVALID_ARGUMENT, "groups", "`items`"),
        (pb.RewardsRequest(options=pb.LabelOptions(constitution="harmless"),
                           items=pb.RewardItems()),
         grpc.StatusCode.INVALID_ARGUMENT, "items", "at least 1"),
        (pb.RewardsRequest(options=pb.LabelOptions(constitution="harmless"), scoring=9,
                           groups=pb.RewardGroups(groups=[group_proto(ONE_GROUP)])),
         grpc.StatusCode.INVALID_ARGUMENT, "scoring", "9"),
        (pb.RewardsRequest(groups=pb.RewardGroups(groups=[group_proto(ONE_GROUP)])),
         grpc.StatusCode.INVALID_ARGUMENT, "options.constitution", "required"),
        (pb.RewardsRequest(options=pb.LabelOptions(constitution="nope"),
                           groups=pb.RewardGroups(groups=[group_proto(ONE_GROUP)])),
         grpc.StatusCode.NOT_FOUND, "constitution", "nope"),
    ],
    ids=["principles", "no-entries", "empty-items", "scoring", "no-constitution", "unknown"],
)  # fmt: skip
async def test_bad_requests_fail_whole_naming_the_field(
    both: Both, request_: pb.RewardsRequest, code: grpc.StatusCode, param: str, words: str
):
    async with both() as wires:
        error = await refused(wires.stub, request_)
    assert error.code() == code, error
    assert error_param(error) == param
    assert words in error.details()


def requests_counted(exposition: str, code: str) -> float:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if (sample.name, labels.get("route"), labels.get("protocol"), labels.get("code")) == (
                "cai_judge_requests_total", REWARDS_ROUTE, "grpc", code
            ):  # fmt: skip
                return float(sample.value)
    return 0.0


async def test_keys_rate_limit_and_metrics_apply_as_for_label(both: Both):
    request = request_proto({"constitution": "harmless", "groups": [ONE_GROUP]})
    keys = {"api_key_hashes": [hash_api_key("s3cret")], "rate_limit": "2/minute"}
    async with both(**keys) as wires:
        error = await refused(wires.stub, request)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = await refused(wires.stub, request) if False else None  # noqa: F841
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await wires.stub.Rewards(request, metadata=(("authorization", "Bearer nope"),))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("x-api-key", "s3cret"),)
        for _ in range(2):
            answer = await wires.stub.Rewards(request, metadata=good)
            assert answer.results[0].WhichOneof("result") == "group"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await wires.stub.Rewards(request, metadata=good)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        exposition = (await wires.http.get("/metrics", headers={"X-API-Key": "s3cret"})).text
    assert requests_counted(exposition, "200") == 2
    assert requests_counted(exposition, "401") == 2
    assert requests_counted(exposition, "429") == 1
