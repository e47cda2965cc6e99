"""The gRPC error table and the generated stubs, without a server (no engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from cai_judge.grpc.convert import command_from_proto, label_to_proto, pair_from_proto
from cai_judge.grpc.errors import domain_to_grpc, http_code, to_grpc
from cai_judge.grpc.gen.v1 import judge_pb2 as pb
from cai_judge.services.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from cai_judge.store.errors import StoreContended
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT


@pytest.mark.parametrize(
    ("error", "code", "http", "retryable"),
    [
        (InvalidRequest("bad", param="pairs"), grpc.StatusCode.INVALID_ARGUMENT, 422, False),
        (NotFound("no such"), grpc.StatusCode.NOT_FOUND, 404, False),
        (Conflict("taken", type="reserved_id"), grpc.StatusCode.ALREADY_EXISTS, 409, False),
        (Unauthenticated("who"), grpc.StatusCode.UNAUTHENTICATED, 401, False),
        (PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED, 403, False),
        (RateLimited("slow", retry_after_s=7), grpc.StatusCode.RESOURCE_EXHAUSTED, 429, True),
        (Unavailable("full", type="queue_full", retry_after_s=2), grpc.StatusCode.UNAVAILABLE,
         503, True),
    ],
)  # fmt: skip
def test_each_service_error_has_its_status_and_details(
    error: ServiceError, code: grpc.StatusCode, http: int, retryable: bool
):
    mapped = to_grpc(error)
    assert mapped.code == code
    assert http_code(code) == http
    metadata = dict(mapped.trailing_metadata)
    status = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    assert (status.code, status.message) == (code.value[0], error.message)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == error.type and info.domain == "cai-judge"
    assert dict(info.metadata) == ({"param": error.param} if error.param else {})
    if retryable:
        retry = error_details_pb2.RetryInfo()
        assert status.details[1].Unpack(retry)
        assert retry.retry_delay.seconds == error.retry_after_s
        assert metadata["retry-after"] == str(error.retry_after_s)
    else:
        assert len(status.details) == 1 and "retry-after" not in metadata


def test_unexpected_errors_are_internal_500():
    class Odd(ServiceError):
        pass

    assert to_grpc(Odd("?")).code == grpc.StatusCode.INTERNAL
    assert http_code(grpc.StatusCode.INTERNAL) == 500


def test_options_are_checked_with_the_field_and_the_limit():
    with pytest.raises(InvalidRequest) as raised:
        command_from_proto(pb.LabelOptions(constitution="harmless", principles=300), [])
    assert raised.value.param == "options.principles"
    assert "256" in raised.value.message
    with pytest.raises(InvalidRequest) as raised:
        command_from_proto(pb.LabelOptions(constitution="x" * 201), [])
    assert raised.value.param == "options.constitution"
    command = command_from_proto(pb.LabelOptions(constitution="harmless"), [])
    assert command.options.principles == "all" and command.options.seed == 0
    with pytest.raises(InvalidRequest) as raised:
        command_from_proto(pb.LabelOptions(constitution="harmless", cot_max_tokens=5000), [])
    assert raised.value.param == "options.cot_max_tokens"
    assert "1024" in raised.value.message
    with pytest.raises(InvalidRequest) as raised:
        command_from_proto(pb.LabelOptions(constitution="harmless", mode=7), [])
    assert raised.value.param == "options.mode"


def test_every_option_travels_into_the_one_options_object():
    """gRPC builds the same LabelOptions as the HTTP API's wire model, field for field."""
    from cai_judge.api.schemas import LabelingOptions

    wire = pb.LabelOptions(
        constitution="harmless", principles=3, seed=9, aggregator=pb.AGGREGATOR_MEAN_PROB,
        per_principle=True, calibrated=True, mode=pb.MODE_COT, cot_max_tokens=40,
    )  # fmt: skip
    http = LabelingOptions(
        constitution="harmless", principles=3, seed=9, aggregator="mean_prob",
        per_principle=True, calibrated=True, mode="cot", cot_max_tokens=40,
    )  # fmt: skip
    assert command_from_proto(wire, []).options == http.to_options()
    from cai_judge.labeling.options import OMITTED_AT_DEFAULT

    stored = set(http.to_options().to_dict()) | set(OMITTED_AT_DEFAULT)
    assert stored == set(LabelingOptions.model_fields)
    adaptive = pb.LabelOptions(
        constitution="harmless", ensemble=pb.ENSEMBLE_ADAPTIVE, ensemble_delta=0.2
    )
    http = LabelingOptions(constitution="harmless", ensemble="adaptive", ensemble_delta=0.2)
    assert command_from_proto(adaptive, []).options == http.to_options()
    # Proto3 zeros are the defaults: full, and δ = 0.1.
    default = command_from_proto(pb.LabelOptions(constitution="harmless"), []).options
    assert (default.ensemble, default.ensemble_delta) == ("full", 0.1)


def test_ensemble_options_are_refused_by_name():
    with pytest.raises(InvalidRequest) as raised:
        command_from_proto(pb.LabelOptions(constitution="harmless", ensemble=9), [])
    assert raised.value.param == "options.ensemble"
    with pytest.raises(InvalidRequest) as raised:
        command_from_proto(
            pb.LabelOptions(
                constitution="harmless", ensemble=pb.ENSEMBLE_ADAPTIVE, ensemble_delta=0.7
            ),
            [],
        )
    assert raised.value.param == "options.ensemble_delta"
    with pytest.raises(InvalidRequest, match="plain"):
        command_from_proto(
            pb.LabelOptions(
                constitution="harmless", ensemble=pb.ENSEMBLE_ADAPTIVE, mode=pb.MODE_COT
            ),
            [],
        )


def test_an_adaptive_label_travels_with_its_provenance():
    from cai_judge.labeling.schema import (
        ConstitutionRef,
        EnsembleProvenance,
        Label,
        TemplateRef,
    )

    provenance = EnsembleProvenance(
        rule="wor-betting", delta=0.1, clip=0.25, round=3, rounds=8, scored=6, selected=16,
        score_units=12, decided="b", certain=False,
    )  # fmt: skip
    label = Label(
        id="p", preferred="b", margin=-0.3, p_a=0.43, position_bias=0.0, consistency=1.0,
        answer_mass=0.9, low_confidence=False, principles=["x"], selection="all",
        aggregator="mean_logodds", constitution=ConstitutionRef(id="c", version="v"),
        template=TemplateRef(id="t", version="v"), model="m", seed=0, ensemble=provenance,
    )  # fmt: skip
    wire = label_to_proto(label)
    assert wire.HasField("ensemble")
    assert (wire.ensemble.round, wire.ensemble.scored, wire.ensemble.score_units) == (3, 6, 12)
    assert (wire.ensemble.rule, wire.ensemble.decided, wire.ensemble.delta) == (
        "wor-betting", "b", 0.1,
    )  # fmt: skip
    assert not label_to_proto(label.model_copy(update={"ensemble": None})).HasField("ensemble")


def test_pairs_reach_the_service_as_the_json_api_sends_them():
    chat = pb.Pair(id="c", response_a="a", response_b="b")
    chat.chat.messages.add(role="user", content="hi")
    assert pair_from_proto(chat) == {
        "id": "c", "prompt": [{"role": "user", "content": "hi"}], "response_a": "a",
        "response_b": "b",
    }  # fmt: skip
    # No prompt stays no prompt, so the validator reports `prompt` as missing.
    assert "prompt" not in pair_from_proto(pb.Pair(id="x", response_a="a", response_b="b"))


def test_calibration_travels_both_ways():
    from cai_judge.labeling.schema import (
        ConstitutionRef,
        Label,
        LabelCalibration,
        TemplateRef,
    )

    options = pb.LabelOptions(constitution="harmless", calibrated=True)
    assert command_from_proto(options, []).options.calibrated
    assert not command_from_proto(pb.LabelOptions(constitution="harmless"), []).options.calibrated
    label = Label(
        id="p", preferred="a", margin=0.3, p_a=0.574, position_bias=0.0, consistency=1.0,
        answer_mass=0.9, low_confidence=False, principles=["x"], selection="all",
        aggregator="mean_logodds", constitution=ConstitutionRef(id="c", version="v"),
        template=TemplateRef(id="t", version="v"), model="m", seed=0,
        calibration=LabelCalibration(profile="abc", raw_margin=1.2, raw_p_a=0.77),
    )  # fmt: skip
    wire = label_to_proto(label)
    assert wire.HasField("calibration")
    assert (wire.calibration.profile, wire.calibration.raw_margin) == ("abc", 1.2)
    assert not label_to_proto(label.model_copy(update={"calibration": None})).HasField(
        "calibration"
    )


def test_a_cot_label_travels_with_its_raw_numbers_and_rationales():
    from cai_judge.labeling.schema import (
        ConstitutionRef,
        Label,
        PrincipleResult,
        Rationale,
        TemplateRef,
    )

    label = Label(
        id="p", preferred="a", margin=0.3, p_a=0.574, position_bias=0.0, consistency=1.0,
        answer_mass=0.9, low_confidence=False, principles=["x"], selection="all",
        aggregator="mean_logodds", constitution=ConstitutionRef(id="c", version="v"),
        template=TemplateRef(id="t", version="v"), model="m", seed=0, mode="cot",
        raw_margin=2.0, raw_p_a=0.88, cot_max_probability=0.6, cot_max_tokens=12,
        rationales=[Rationale(principle="x", ab="because A", ba="because B")],
        per_principle=[PrincipleResult(
            principle="x", s_ab=0.1, s_ba=-0.1, margin=0.3, position_bias=0.0, agree=True,
            answer_mass=0.9, raw_s_ab=1.0, raw_s_ba=-1.0, raw_margin=2.0,
        )],
    )  # fmt: skip
    wire = label_to_proto(label)
    assert wire.mode == pb.MODE_COT
    assert (wire.raw_margin, wire.raw_p_a, wire.cot_max_tokens) == (2.0, 0.88, 12)
    assert [(r.principle, r.ab, r.ba) for r in wire.rationales] == [("x", "because A", "because B")]
    principle = wire.per_principle[0]
    assert (principle.raw_s_ab, principle.raw_s_ba, principle.raw_margin) == (1.0, -1.0, 2.0)
    plain = label_to_proto(label.model_copy(update={"mode": None, "raw_margin": None}))
    assert plain.mode == pb.MODE_UNSPECIFIED and not plain.HasField("raw_margin")


def test_the_stale_stub_check_fails_after_a_proto_edit(tmp_path: Path):
    """`make lint` runs scripts/protos.sh --check: current stubs pass, stale ones fail."""
    for part in ("scripts/protos.sh", "protos", "service/cai_judge/grpc/gen"):
        source, target = ROOT / part, tmp_path / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
    env = {**os.environ, "PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    check = ["bash", str(tmp_path / "scripts" / "protos.sh"), "--check"]
    current = subprocess.run(check, env=env, capture_output=True, text=True)
    assert current.returncode == 0, current.stderr
    proto = tmp_path / "protos" / "cai_judge" / "v1" / "judge.proto"
    proto.write_text(
        proto.read_text().replace(
            "  bool per_principle = 5;", "  bool per_principle = 5;\n  bool extra = 99;"
        )
    )
    stale = subprocess.run(check, env=env, capture_output=True, text=True)
    assert stale.returncode == 1
    assert "make protos" in stale.stderr


def test_a_contended_store_is_unavailable_with_retry_info():
    # Concurrent submits that outran the store's retries: UNAVAILABLE with a retry delay,
    # as HTTP answers 503 with Retry-After; never INTERNAL.
    mapped = domain_to_grpc(StoreContended("RedisJobStore.create", 64, 5.0), retry_after_s=3)
    assert mapped is not None and mapped.code == grpc.StatusCode.UNAVAILABLE
    metadata = dict(mapped.trailing_metadata)
    assert metadata["retry-after"] == "3"
    status = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "store_contended"
