"""`options.calibrated` on the gRPC `Rewards` method (issue 32): the same length-debiased
rewards as POST /v1/rewards with `calibrated: true`, the profile named in the provenance, and
INVALID_ARGUMENT naming `calibrated` when no profile fits. One app serves both wires, on the
fake engine: the mapping is the subject, not the engine's numbers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from cai_judge.api.app import create_app
from cai_judge.grpc.gen.v1 import judge_pb2 as pb
from cai_judge.grpc.gen.v1 import judge_pb2_grpc
from cai_judge.grpc.server import GrpcServer
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from tests.support.fake_engine import FakeEngine
from tests.support.grpc_rewards import request_proto, response_json
from tests.support.length_profiles import length_profile, write_profile

PROMPT = "How do I pick a lock?"
COMPLETIONS = [
    "Call a locksmith.",
    "I can't help with breaking into property you don't own.",
    "Insert a tension wrench into the keyhole, then rake the pins gently until the plug turns.",
]
BODY = {
    "constitution": "harmless",
    "detail": True,
    "groups": [{"id": "g", "prompt": PROMPT, "completions": COMPLETIONS}],
}


@asynccontextmanager
async def wires(**settings: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient, Any]]:
    app = create_app(
        Settings(max_model_len=1024, **settings),
        engine=FakeEngine(max_model_len=1024),
        registry=ConstitutionRegistry.with_builtins(),
    )
    async with app.router.lifespan_context(app):
        server = GrpcServer(app.state.services)
        await server.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://test") as http,
                grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
            ):
                yield app.state.services, http, judge_pb2_grpc.JudgeStub(channel)
        finally:
            await server.stop(0)


def calibrated_request(body: dict[str, Any]) -> pb.RewardsRequest:
    request = request_proto(body)
    request.options.calibrated = True
    return request


async def test_calibrated_grpc_rewards_are_the_http_ones_and_name_the_profile(tmp_path: Path):
    async with wires() as (services, _, _):
        profile = length_profile(services)
    write_profile(profile, tmp_path)
    async with wires(calibration_dir=tmp_path) as (_, http, stub):
        over_grpc = response_json(await stub.Rewards(calibrated_request(BODY)))
        raw = response_json(await stub.Rewards(request_proto(BODY)))
        response = await http.post("/v1/rewards", json=BODY | {"calibrated": True})
    assert response.status_code == 200, response.text
    [http_result] = response.json()["results"]
    [grpc_result] = over_grpc["results"]
    assert http_result["provenance"]["calibration_profile"] == profile.hash
    # response_json reads the fields the HTTP answer always has; the new one separately.
    assert grpc_result == http_result | {
        "provenance": {
            k: v for k, v in http_result["provenance"].items() if k != "calibration_profile"
        }
    }
    wire = await stub_provenance(tmp_path, calibrated=True)
    assert wire.HasField("calibration_profile") and wire.calibration_profile == profile.hash
    assert not (await stub_provenance(tmp_path, calibrated=False)).HasField("calibration_profile")
    assert raw["results"][0]["rewards"] != grpc_result["rewards"]


async def stub_provenance(directory: Path, *, calibrated: bool) -> pb.RewardProvenance:
    async with wires(calibration_dir=directory) as (_, _, stub):
        request = calibrated_request(BODY) if calibrated else request_proto(BODY)
        answer = await stub.Rewards(request)
    return answer.results[0].group.provenance


async def test_no_profile_is_invalid_argument_naming_calibrated():
    async with wires() as (_, _, stub):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Rewards(calibrated_request(BODY))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CAI_JUDGE_CALIBRATION_DIR" in str(refused.value.details())
    status = status_pb2.Status.FromString(
        dict(refused.value.trailing_metadata() or ())["grpc-status-details-bin"]
    )
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.metadata.get("param")) == ("calibration_unavailable", "calibrated")
