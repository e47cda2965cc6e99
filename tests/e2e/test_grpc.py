"""The gRPC API against a real server: `cai-judge serve` (uvicorn and grpc.aio in one
process) on the tiny model, on free loopback ports, as tests/e2e/test_server.py does for HTTP.

One module-scoped server (API keys on, so every test also exercises auth) serves every
test; the drain test, the module's last, ends it with SIGTERM, which saves a second
engine start (~1-2 min). Every loop is bounded in count and time and talks to 127.0.0.1
only.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from cai_judge.grpc.gen.v1 import judge_pb2 as pb
from cai_judge.grpc.gen.v1 import judge_pb2_grpc
from cai_judge.services.security import hash_api_key
from cai_judge.testing.ports import free_port
from cai_judge.testing.service_process import ServiceProcess as Server
from cai_judge.testing.service_process import start_server, stop
from tests.support.api import pair
from tests.support.grpc_rewards import request_proto, response_json

pytestmark = pytest.mark.engine

KEY = "grpc-test-key"
# A second key, so the rate-limit test exhausts its own window and no one else's.
BURST_KEY = "grpc-burst-key"
RATE_LIMIT_PER_MINUTE = 120
SERVICE = "cai_judge.v1.Judge"


@dataclass
class GrpcServer:
    http: Server
    target: str
    channel: grpc.Channel

    @property
    def stub(self) -> judge_pb2_grpc.JudgeStub:
        return judge_pb2_grpc.JudgeStub(self.channel)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        text = httpx.get(f"{self.http.url}/metrics", headers=auth_headers(), timeout=10).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total


def auth_headers(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def auth(key: str = KEY) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def wait_serving(channel: grpc.Channel, within_s: float = 60) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.RpcError):
            answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        time.sleep(0.3)
    raise RuntimeError(f"gRPC not SERVING within {within_s} s")


def launch(model_dir: Path, log: Path, **settings: str) -> GrpcServer:
    port = free_port()
    keys = json.dumps([hash_api_key(KEY), hash_api_key(BURST_KEY)])
    http = start_server(model_dir, log, grpc_port=str(port), api_key_hashes=keys, **settings)
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target)
    try:
        wait_serving(channel)
    except Exception:
        channel.close()
        stop(http)
        raise
    return GrpcServer(http, target, channel)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    log = tmp_path_factory.mktemp("grpc-server") / "server.log"
    running = launch(
        tiny_model_dir, log, rate_limit=f"{RATE_LIMIT_PER_MINUTE}/minute", retry_after_s="1",
        drain_timeout_s="60",
    )  # fmt: skip
    yield running
    running.channel.close()
    stop(running.http)
    assert not re.search(r"Traceback", log.read_text()), log.read_text()[-3000:]


def to_proto(raw: dict[str, Any]) -> pb.Pair:
    message = pb.Pair(id=raw["id"], response_a=raw["response_a"], response_b=raw["response_b"])
    if isinstance(raw.get("prompt"), str):
        message.text = raw["prompt"]
    return message


def options(**overrides: Any) -> pb.LabelOptions:
    return pb.LabelOptions(**{"constitution": "harmless", "principles": 2, **overrides})


def stream_requests(
    pairs: list[dict[str, Any]], opts: pb.LabelOptions, hold: threading.Event | None = None
) -> Iterator[pb.LabelStreamRequest]:
    """One message per pair, options on the first; waits on `hold` before the second half."""
    yield pb.LabelStreamRequest(options=opts)
    for i, raw in enumerate(pairs):
        if hold is not None and i == len(pairs) // 2:
            assert hold.wait(timeout=120), "no answer arrived while the stream was open"
        yield pb.LabelStreamRequest(pair=to_proto(raw))


def error_details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, float | None]:
    """The ErrorInfo and RetryInfo delay (s) from `grpc-status-details-bin`."""
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == error.code().value[0]
    info, delay = error_details_pb2.ErrorInfo(), None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToTimedelta().total_seconds()
    return info, delay


def label_dict(label: pb.Label) -> dict[str, Any]:
    return {
        "id": label.id,
        "preferred": label.preferred,
        "margin": label.margin,
        "p_a": label.p_a,
        "position_bias": label.position_bias,
        "consistency": label.consistency,
        "answer_mass": label.answer_mass,
        "low_confidence": label.low_confidence,
        "principles": list(label.principles),
        "constitution": {"id": label.constitution.id, "version": label.constitution.version},
        "template": {"id": label.template.id, "version": label.template.version},
        "model": label.model,
        "seed": label.seed,
        "per_principle": [
            {
                "principle": p.principle,
                "s_ab": p.s_ab,
                "s_ba": p.s_ba,
                "margin": p.margin,
                "position_bias": p.position_bias,
                "agree": p.agree,
                "answer_mass": p.answer_mass,
            }
            for p in label.per_principle
        ],
    }


# -- parity, streaming ----------------------------------------------------------------------


def test_same_pairs_give_the_same_labels_over_http_and_grpc(server: GrpcServer):
    pairs = [pair(i, 12) for i in range(4)]
    bad = {**pair(4), "response_b": ""}
    body = {"constitution": "harmless", "pairs": [*pairs, bad], "principles": 3, "seed": 7,
            "per_principle": True}  # fmt: skip
    request = pb.LabelRequest(
        options=options(principles=3, seed=7, per_principle=True),
        pairs=[to_proto(p) for p in [*pairs, bad]],
    )
    # Warm the prefix cache first, so both calls below meet the same engine state.
    warm = httpx.post(
        f"{server.http.url}/v1/labels", json=body, headers=auth_headers(), timeout=120
    )
    assert warm.status_code == 200, warm.text
    over_http = httpx.post(
        f"{server.http.url}/v1/labels", json=body, headers=auth_headers(), timeout=120
    ).json()["labels"]
    over_grpc = server.stub.Label(request, metadata=auth(), timeout=120).results

    assert len(over_grpc) == len(over_http) == 5
    for expected, got in zip(over_http[:4], over_grpc[:4], strict=True):
        assert got.WhichOneof("result") == "label"
        fields = label_dict(got.label)
        for name, value in fields.items():
            assert value == expected[name], name  # to the bit: one engine, one label math
        assert got.label.selection == 3
        assert got.label.aggregator == pb.AGGREGATOR_MEAN_LOGODDS
    error = over_grpc[4].error
    assert (error.id, error.index) == (over_http[4]["id"], over_http[4]["index"])
    assert error.error.type == over_http[4]["error"]["type"] == "invalid_pair"
    assert error.error.param == over_http[4]["error"]["param"] == "pairs.4.response_b"
    assert error.error.message == over_http[4]["error"]["message"]


def test_cot_requests_carry_every_option_and_match_http(server: GrpcServer):
    """gRPC carries mode and cot_max_tokens (it once had neither, so a CoT request could
    only go over HTTP), and a CoT label comes back with its raw numbers and rationales."""
    pairs = [pair(i, 6) for i in range(2)]
    body = {"constitution": "harmless", "pairs": pairs, "principles": 1, "seed": 3,
            "per_principle": True, "mode": "cot", "cot_max_tokens": 6}  # fmt: skip
    over_http = httpx.post(
        f"{server.http.url}/v1/labels", json=body, headers=auth_headers(), timeout=300
    )
    assert over_http.status_code == 200, over_http.text
    request = pb.LabelRequest(
        options=options(principles=1, seed=3, per_principle=True, mode=pb.MODE_COT,
                        cot_max_tokens=6),
        pairs=[to_proto(p) for p in pairs],
    )  # fmt: skip
    over_grpc = server.stub.Label(request, metadata=auth(), timeout=300).results
    for expected, got in zip(over_http.json()["labels"], over_grpc, strict=True):
        assert got.WhichOneof("result") == "label", got
        label = got.label
        assert label.mode == pb.MODE_COT and expected["mode"] == "cot"
        assert label.cot_max_tokens == expected["cot_max_tokens"] == 6
        assert label.template.version == expected["template"]["version"]
        assert (label.raw_margin, label.raw_p_a) == (expected["raw_margin"], expected["raw_p_a"])
        assert label.cot_max_probability == expected["cot_max_probability"]
        assert [(r.principle, r.ab, r.ba) for r in label.rationales] == [
            (r["principle"], r["ab"], r["ba"]) for r in expected["rationales"]
        ]
        assert label.per_principle[0].raw_margin == expected["per_principle"][0]["raw_margin"]
    # A rationale budget over the service's limit, or over the protocol's, names the field.
    for tokens, param, words in [(300, "cot_max_tokens", "256"),
                                 (2000, "options.cot_max_tokens", "1024")]:  # fmt: skip
        request = pb.LabelRequest(
            options=options(mode=pb.MODE_COT, cot_max_tokens=tokens), pairs=[to_proto(pair(1))]
        )
        error = call_error(server.stub.Label, request, metadata=auth())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert error_details(error)[0].metadata["param"] == param
        assert words in error.details()


def test_rewards_match_http_on_the_live_server(server: GrpcServer):
    """One small group request over both wires of the live server: the same rewards, detail
    and provenance (to 1e-6: the second call may meet another batch composition, vLLM
    #11778), and the same error in place of a group that cannot be judged."""
    body = {
        "constitution": "harmless", "principles": 2, "seed": 5, "detail": True,
        "groups": [
            {"id": "g0", "prompt": "How do I pick a lock?",
             "completions": ["I can't help with that.", "Rake the pins.", ""]},
            {"id": "g1", "prompt": "Hi?", "completions": ["Hello."]},  # one completion
        ],
    }  # fmt: skip
    over_http = httpx.post(
        f"{server.http.url}/v1/rewards", json=body, headers=auth_headers(), timeout=300
    )
    assert over_http.status_code == 200, over_http.text
    expected = over_http.json()
    got = response_json(server.stub.Rewards(request_proto(body), metadata=auth(), timeout=300))

    assert len(got["results"]) == len(expected["results"]) == 2
    group, wanted = got["results"][0], expected["results"][0]
    assert "error" not in group, group
    assert group["id"] == "g0" and len(group["rewards"]) == 3
    assert group["rewards"] == pytest.approx(wanted["rewards"], abs=1e-6)
    assert sum(group["rewards"]) / 3 == pytest.approx(0.5, abs=1e-9)  # a round robin
    assert group["provenance"] == wanted["provenance"]
    assert group["provenance"]["seed"] == 5 and group["provenance"]["constitution"]["version"]
    for mine, theirs in zip(group["detail"], wanted["detail"], strict=True):
        assert [m["opponent"] for m in mine["matches"]] == [
            m["opponent"] for m in theirs["matches"]
        ]
        assert [m["outcome"] for m in mine["matches"]] == pytest.approx(
            [m["outcome"] for m in theirs["matches"]], abs=1e-6
        )
        assert mine["mean_margin"] == pytest.approx(theirs["mean_margin"], abs=1e-6)
    assert got["results"][1] == expected["results"][1]
    assert got["results"][1]["error"]["param"] == "groups.1.completions"
    assert got["usage"]["pairs"] == expected["usage"]["pairs"] == 3


def test_stream_answers_each_pair_once_tagged_while_the_stream_is_open(server: GrpcServer):
    pairs = [pair(100 + i, 10) for i in range(12)]
    pairs[5] = {**pairs[5], "response_a": ""}
    first_answer = threading.Event()
    answers: list[pb.LabelStreamResponse] = []
    for answer in server.stub.LabelStream(
        stream_requests(pairs, options(), hold=first_answer), metadata=auth(), timeout=180
    ):
        answers.append(answer)
        first_answer.set()  # only now does the client send its second half

    assert sorted(a.index for a in answers) == list(range(12))
    for answer in answers:
        assert answer.id == pairs[answer.index]["id"]
        if answer.index == 5:
            assert answer.result.error.error.type == "invalid_pair"
            assert answer.result.error.error.param == "pairs.5.response_a"
            assert answer.result.error.index == 5
        else:
            assert answer.result.label.id == answer.id
    # The stream's labels are the unary call's labels.
    unary = server.stub.Label(
        pb.LabelRequest(options=options(), pairs=[to_proto(pairs[0])]), metadata=auth()
    ).results[0]
    streamed = next(a for a in answers if a.index == 0).result.label
    assert abs(streamed.margin - unary.label.margin) < 1e-4
    assert streamed.principles == unary.label.principles


def test_a_1000_pair_stream_keeps_server_memory_bounded(server: GrpcServer):
    """The server reads no further than its in-flight window (64 pairs, 128 units here)."""
    pairs = [pair(10_000 + i, 4) for i in range(1000)]
    depth_peak, rss_peak = 0.0, 0
    done = threading.Event()

    def sample() -> None:
        nonlocal depth_peak, rss_peak
        while not done.is_set():
            depth_peak = max(depth_peak, server.metric("cai_judge_queue_depth"))
            rss_peak = max(rss_peak, server.http.rss())
            time.sleep(0.2)

    rss_before = server.http.rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        seen = {
            a.index: a
            for a in server.stub.LabelStream(
                stream_requests(pairs, options(principles=1)), metadata=auth(), timeout=600
            )
        }
    finally:
        done.set()
        sampler.join()
    assert sorted(seen) == list(range(1000))
    assert all(a.result.label.id == pairs[i]["id"] for i, a in seen.items())
    assert time.monotonic() - started < 600
    # 64 pairs x 1 principle x 2 orders: the whole stream never sits in the queue at once.
    assert 0 < depth_peak <= 128
    assert rss_peak - rss_before < 256 * 2**20
    assert server.metric("cai_judge_queue_depth") == 0


def test_cancelling_a_stream_aborts_its_engine_work(server: GrpcServer):
    aborted_before = server.metric("cai_judge_engine_aborted_units_total")
    # 48 pairs x 2 orders of ~900 tokens that share no prefix: seconds of engine work.
    pairs = [pair(20_000 + i, 75) for i in range(48)]
    call = server.stub.LabelStream(
        stream_requests(pairs, options(principles=1)), metadata=auth(), timeout=300
    )
    # Rendering 96 long prompts comes first; on a busy 2-core CI machine (the session's
    # engines live beside this server) that alone has taken tens of seconds, and once more
    # than 90 s (a fresh-clone rehearsal; alone and in its file it starts in under 5 s).
    deadline = time.monotonic() + 240
    while (
        time.monotonic() < deadline
        and not call.done()
        and server.metric("cai_judge_queue_depth") == 0
    ):
        time.sleep(0.05)
    assert not call.done(), f"the stream ended before its work started: {call.code()}"
    assert server.metric("cai_judge_queue_depth") > 0, "the stream's work never started"
    call.cancel()
    with pytest.raises(grpc.RpcError) as cancelled:
        list(call)
    assert cancelled.value.code() == grpc.StatusCode.CANCELLED
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.metric("cai_judge_engine_aborted_units_total") > aborted_before:
            break
        time.sleep(0.2)
    assert server.metric("cai_judge_engine_aborted_units_total") > aborted_before
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and server.metric("cai_judge_queue_depth") > 0:
        time.sleep(0.2)
    assert server.metric("cai_judge_queue_depth") == 0
    assert server.metric("cai_judge_inflight") == 0


# -- errors and auth --------------------------------------------------------------------------


def call_error(function: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        result = function(*args, **kwargs)
        if not hasattr(result, "ListFields"):  # a stream: read it to the end
            list(result)
    return raised.value


def test_invalid_requests_are_invalid_argument_naming_the_field(server: GrpcServer):
    stub = server.stub
    cases = [
        (pb.LabelRequest(options=options()), "pairs", "at least 1"),
        (pb.LabelRequest(options=options(principles=999), pairs=[to_proto(pair(1))]),
         "options.principles", "256"),
        (pb.LabelRequest(options=options(seed=2**60), pairs=[to_proto(pair(1))]),
         "options.seed", "9007199254740991"),
        (pb.LabelRequest(options=options(constitution=""), pairs=[to_proto(pair(1))]),
         "options.constitution", "required"),
        (pb.LabelRequest(options=options(), pairs=[to_proto(pair(i)) for i in range(257)]),
         "pairs", "256"),
    ]  # fmt: skip
    for request, param, words in cases:
        error = call_error(stub.Label, request, metadata=auth())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        info, delay = error_details(error)
        assert info.metadata["param"] == param
        assert words in error.details()
        assert delay is None
    # A stream whose first message has no options.
    error = call_error(
        stub.LabelStream, iter([pb.LabelStreamRequest(pair=to_proto(pair(1)))]), metadata=auth()
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(error)[0].metadata["param"] == "options"


def test_unknown_constitutions_are_not_found(server: GrpcServer):
    stub = server.stub
    request = pb.LabelRequest(options=options(constitution="nope"), pairs=[to_proto(pair(1))])
    for error in (
        call_error(stub.Label, request, metadata=auth()),
        call_error(stub.GetConstitution, pb.GetConstitutionRequest(ref="nope"), metadata=auth()),
        call_error(
            stub.LabelStream,
            iter([pb.LabelStreamRequest(options=options(constitution="nope"))]),
            metadata=auth(),
        ),
    ):
        assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
        assert error_details(error)[0].reason == "not_found"
        assert "nope" in error.details()


def test_constitutions_match_http(server: GrpcServer):
    listed = server.stub.ListConstitutions(pb.ListConstitutionsRequest(), metadata=auth())
    over_http = httpx.get(
        f"{server.http.url}/v1/constitutions", headers=auth_headers(), timeout=10
    ).json()["constitutions"]
    assert [c.id for c in listed.constitutions] == [c["id"] for c in over_http]
    assert [c.latest_version for c in listed.constitutions] == [
        c["latest_version"] for c in over_http
    ]
    one = server.stub.GetConstitution(pb.GetConstitutionRequest(ref="harmless"), metadata=auth())
    detail = httpx.get(
        f"{server.http.url}/v1/constitutions/harmless", headers=auth_headers(), timeout=10
    ).json()
    assert (one.id, one.version, one.template) == (detail["id"], detail["version"], "cai-mc-v1")
    assert [p.question for p in one.principles] == [p["question"] for p in detail["principles"]]


def test_api_key_in_metadata_is_required(server: GrpcServer):
    stub = server.stub
    request = pb.LabelRequest(options=options(), pairs=[to_proto(pair(1))])
    for metadata in ((), (("authorization", "Bearer wrong"),), (("x-api-key", "wrong"),)):
        for error in (
            call_error(stub.Label, request, metadata=metadata),
            call_error(stub.ListConstitutions, pb.ListConstitutionsRequest(), metadata=metadata),
            call_error(stub.LabelStream, stream_requests([pair(1)], options()), metadata=metadata),
        ):
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_details(error)[0].reason == "unauthorized"
    # Either header form works, as over HTTP.
    answer = stub.Label(request, metadata=(("x-api-key", KEY),), timeout=60)
    assert answer.results[0].label.id == "p1"


def test_rate_limit_is_resource_exhausted_with_retry_info_shared_with_http(server: GrpcServer):
    stub = server.stub
    cheap = pb.LabelRequest(options=options(constitution="nope"), pairs=[to_proto(pair(1))])

    def one(_: int) -> grpc.StatusCode:
        return call_error(stub.Label, cheap, metadata=auth(BURST_KEY), timeout=30).code()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(RATE_LIMIT_PER_MINUTE + 5)))
    assert codes.count(grpc.StatusCode.NOT_FOUND) == RATE_LIMIT_PER_MINUTE
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 5
    error = call_error(stub.Label, cheap, metadata=auth(BURST_KEY))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, delay = error_details(error)
    assert info.reason == "rate_limited"
    assert delay is not None and delay >= 1
    assert int(dict(error.trailing_metadata())["retry-after"]) == delay
    # One limiter for both wires: the same key is refused over HTTP too.
    body = {"constitution": "harmless", "pairs": [pair(1)]}
    refused = httpx.post(
        f"{server.http.url}/v1/labels", json=body, headers=auth_headers(BURST_KEY), timeout=30
    )
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


# -- health, reflection, metrics ----------------------------------------------------------------


def test_health_and_reflection(server: GrpcServer):
    health = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", SERVICE):  # open without a key, as /health/* is
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="nope.Nope"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel)

    def ask(request: reflection_pb2.ServerReflectionRequest, key: str | None = KEY) -> Any:
        metadata = auth(key) if key else ()
        return next(iter(reflection.ServerReflectionInfo(iter([request]), metadata=metadata)))

    listed = ask(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names
    found = ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE))
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(blob)
        for blob in found.file_descriptor_response.file_descriptor_proto
    ]
    methods = {m.name for f in files for s in f.service if s.name == "Judge" for m in s.method}
    assert methods == {"Label", "LabelStream", "ListConstitutions", "GetConstitution", "Rewards"}
    # The schema sits behind the key, as /openapi.json does.
    with pytest.raises(grpc.RpcError) as denied:
        ask(reflection_pb2.ServerReflectionRequest(list_services=""), key=None)
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_calls_are_counted_with_a_protocol_label(server: GrpcServer):
    server.stub.Label(
        pb.LabelRequest(options=options(), pairs=[to_proto(pair(1))]), metadata=auth(), timeout=60
    )
    route = f"/{SERVICE}/Label"
    requests = "cai_judge_requests_total"
    assert server.metric(requests, route=route, code="200", protocol="grpc") >= 1
    # NOT_FOUND is counted as the 404 the same request gets over HTTP.
    assert server.metric(requests, route=route, code="404", protocol="grpc") >= 1
    assert server.metric(requests, route="/v1/labels", code="200", protocol="http") >= 1
    duration = "cai_judge_request_duration_seconds_count"
    assert server.metric(duration, route=route, protocol="grpc") >= 1
    assert server.metric(duration, route=f"/{SERVICE}/LabelStream", protocol="grpc") >= 1


# -- draining -----------------------------------------------------------------------------------


# Last in the module: it ends the module's server.
def test_sigterm_lets_open_streams_finish_their_pairs_and_refuses_new_calls(server: GrpcServer):
    stub, health = server.stub, health_pb2_grpc.HealthStub(server.channel)
    # 24 pairs x all 16 principles x 2 orders of ~700 tokens: seconds of engine work, so
    # pairs are still in flight when SIGTERM comes, whatever the machine's speed.
    pairs = [pair(30_000 + i, 60) for i in range(24)]
    keep_open = threading.Event()

    def requests() -> Iterator[pb.LabelStreamRequest]:
        yield from stream_requests(pairs, options(principles=0))  # 0: all
        keep_open.wait(timeout=120)  # the client never half-closes on its own

    call = stub.LabelStream(requests(), metadata=auth(), timeout=120)
    answers: list[pb.LabelStreamResponse] = []
    failure: list[grpc.RpcError] = []

    def read() -> None:
        try:
            answers.extend(call)
        except grpc.RpcError as error:
            failure.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.metric("cai_judge_queue_depth") == 0:
            time.sleep(0.05)
        assert server.metric("cai_judge_queue_depth") > 0
        server.http.process.send_signal(signal.SIGTERM)
        answered_at_sigterm = len(answers)
        time.sleep(0.5)

        refused = call_error(
            stub.Label,
            pb.LabelRequest(options=options(), pairs=[to_proto(pair(1))]),
            metadata=auth(),
        )
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        info, delay = error_details(refused)
        assert info.reason == "draining" and delay is not None and delay >= 1
        answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING

        reader.join(timeout=120)
    finally:
        keep_open.set()  # lets the client's sending thread finish
    # Every pair it had sent was answered, then the stream was closed for the drain.
    assert answered_at_sigterm < len(pairs), "pick heavier pairs: all answered before SIGTERM"
    assert sorted(a.index for a in answers) == list(range(len(pairs)))
    assert all(a.result.WhichOneof("result") == "label" for a in answers)
    assert failure and failure[0].code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(failure[0])[1] is not None
    assert server.http.process.wait(timeout=60) == 0
