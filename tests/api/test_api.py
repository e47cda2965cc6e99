"""The HTTP routes and their errors, in process (httpx ASGI transport), on the fake engine:
admission, limits and error mapping are not the engine's logic (tests/support/fake_engine.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from cai_judge.grpc.errors import domain_to_grpc
from cai_judge.labeling.calibration_profile import (
    CalibrationError,
    CalibrationProfile,
    CalibrationTerms,
    FitRecord,
    ProfileKey,
    ProfileMismatch,
)
from cai_judge.labeling.constitution import ConstitutionError
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.schema import ConstitutionRef, TemplateRef
from cai_judge.labeling.templates import TemplateError
from cai_judge.services.security import hash_api_key
from tests.support.api import PAIR, Client, assert_envelope
from tests.support.paths import REPO_ROOT


async def test_labels_in_order_with_usage(client: Client):
    async with client() as http:
        swapped = {**PAIR, "id": "p2", "response_a": PAIR["response_b"],
                   "response_b": PAIR["response_a"]}  # fmt: skip
        response = await http.post(
            "/v1/labels",
            json={"constitution": "harmless", "pairs": [PAIR, swapped], "principles": 3},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        first, second = body["labels"]
        assert [first["id"], second["id"]] == ["p1", "p2"]
        assert second["margin"] == -first["margin"]
        assert len(first["principles"]) == 3
        assert body["usage"]["pairs"] == 2
        assert body["usage"]["score_units"] == 6  # the swap shares all its units
        assert body["usage"]["prompt_tokens"] > 0

        metrics = (await http.get("/metrics")).text
        for name in (
            'cai_judge_requests_total{code="200",protocol="http",route="/v1/labels"}',
            "cai_judge_request_duration_seconds_bucket",
            "cai_judge_pairs_total",
            "cai_judge_score_units_total",
            "cai_judge_queue_depth",
            "cai_judge_inflight",
            "cai_judge_labels_total",
            "cai_judge_position_consistency_bucket",
            "cai_judge_answer_mass_bucket",
            'cai_judge_engine_tokens_total{kind="cached"',
            "cai_judge_batch_size_bucket",
            "cai_judge_build_info",
        ):
            assert name in metrics, name


async def test_bad_items_are_reported_beside_good_labels(client: Client):
    async with client() as http:
        empty = {**PAIR, "id": "empty", "response_b": ""}
        huge = {**PAIR, "id": "huge", "response_a": "word " * 3000}
        no_id = {"prompt": "x", "response_a": "y", "response_b": "z"}
        response = await http.post(
            "/v1/labels",
            json={"constitution": "harmless", "pairs": [empty, PAIR, huge, no_id], "principles": 1},
        )
        assert response.status_code == 200, response.text
        results = response.json()["labels"]
        assert results[0]["error"]["param"] == "pairs.0.response_b"
        assert "at least 1 character" in results[0]["error"]["message"]
        assert results[0]["id"] == "empty" and results[0]["index"] == 0
        assert results[1]["id"] == "p1" and "margin" in results[1]
        assert "over the model's context of 1024" in results[2]["error"]["message"]
        assert results[3]["error"]["param"] == "pairs.3.id"
        assert response.json()["usage"]["pairs"] == 1


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"pairs": [PAIR]}, "constitution", ["Field required"]),
        ({"constitution": "harmless", "pairs": []}, "pairs", ["at least 1 item"]),
        ({"constitution": "harmless", "pairs": [PAIR], "principles": 0}, "principles",
         ["must be at least 1 (got 0)"]),
        ({"constitution": "harmless", "pairs": [PAIR], "aggregator": "max"}, "aggregator",
         ["mean_logodds"]),
        ({"constitution": "harmless", "pairs": [PAIR], "extra": 1}, "extra", ["Extra inputs"]),
    ],
)  # fmt: skip
async def test_schema_errors_name_field_and_limit(client: Client, body, param, words):
    async with client() as http:
        assert_envelope(await http.post("/v1/labels", json=body), 422, param, *words)


async def test_invalid_json_and_too_many_pairs(client: Client):
    async with client(max_pairs_per_request=2) as http:
        response = await http.post(
            "/v1/labels", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["error"]["type"] == "invalid_request"
        too_many = {"constitution": "harmless", "pairs": [PAIR] * 3}
        assert_envelope(
            await http.post("/v1/labels", json=too_many), 422, "pairs", "3 pairs", "limit of 2"
        )


async def test_unknown_constitution_is_404(client: Client):
    async with client() as http:
        response = await http.post("/v1/labels", json={"constitution": "nope", "pairs": [PAIR]})
        assert_envelope(response, 404, "constitution", "unknown constitution 'nope'")
        response = await http.get("/v1/constitutions/harmless@00000000")
        assert_envelope(response, 404, "constitution", "no single version")


async def test_body_over_the_limit_is_413(client: Client):
    async with client(max_body_bytes=2048) as http:
        big = {"constitution": "harmless", "pairs": [{**PAIR, "response_a": "x" * 4096}]}
        response = await http.post("/v1/labels", json=big)
        assert_envelope(response, 413, None, "over the limit of 2048")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(4):
                yield b" " * 1024

        response = await http.post(
            "/v1/labels", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_envelope(response, 413, None, "over the limit of 2048")
        assert response.json()["error"]["type"] == "request_too_large"


async def test_api_keys_deny_by_default(client: Client):
    async with client(api_key_hashes=[hash_api_key("s3cret"), hash_api_key("other")]) as http:
        body = {"constitution": "harmless", "pairs": [PAIR], "principles": 1}
        assert_envelope(await http.post("/v1/labels", json=body), 401, "authorization")
        wrong = {"Authorization": "Bearer nope"}
        assert (await http.post("/v1/labels", json=body, headers=wrong)).status_code == 401
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/v1/constitutions")).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert (await http.post("/v1/labels", json=body, headers=good)).status_code == 200
        assert (await http.get("/metrics", headers={"X-API-Key": "other"})).status_code == 200
        assert (await http.get("/health/live")).status_code == 200
        assert (await http.get("/health/ready")).status_code == 200


async def test_rate_limit_is_429_with_retry_after(client: Client):
    async with client(rate_limit="2/minute") as http:
        body = {"constitution": "harmless", "pairs": [PAIR], "principles": 1}
        statuses = [(await http.post("/v1/labels", json=body)).status_code for _ in range(2)]
        assert statuses == [200, 200]
        response = await http.post("/v1/labels", json=body)
        assert_envelope(response, 429, None, "2/minute")
        assert 1 <= int(response.headers["Retry-After"]) <= 60


async def test_queue_full_and_draining_are_503(client: Client):
    async with client(max_queued_units=40, retry_after_s=3) as http:
        state = http.app.state.services.admission  # type: ignore[attr-defined]
        body = {"constitution": "harmless", "pairs": [PAIR]}  # 16 principles x 2 = 32 units
        state.queued_units = 20  # another request holds 20 units
        response = await http.post("/v1/labels", json=body)
        assert_envelope(response, 503, None, "queue full", "20 of 40")
        assert response.headers["Retry-After"] == "3"
        state.queued_units = 0
        other = {**PAIR, "id": "p2", "response_a": "Boil it."}
        response = await http.post("/v1/labels", json={**body, "pairs": [PAIR, other]})
        # 64 units can never fit: not a retryable 503. (Two copies of one pair would share
        # their 32 units and fit: admission counts the unique units the engine will see.)
        assert_envelope(response, 422, "pairs", "64 score units", "capacity of 40")
        assert (await http.post("/v1/labels", json=body)).status_code == 200
        state.draining = True
        response = await http.post("/v1/labels", json=body)
        assert_envelope(response, 503, None, "draining")
        ready = await http.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["draining"] == "yes"


async def test_constitution_routes(client: Client):
    async with client() as http:
        listing = (await http.get("/v1/constitutions")).json()["constitutions"]
        assert {"harmless", "helpful-harmless", "coding-assistant"} <= {c["id"] for c in listing}
        latest = (await http.get("/v1/constitutions/harmless")).json()
        assert len(latest["principles"]) == 16
        pinned = await http.get(f"/v1/constitutions/harmless@{latest['version'][:10]}")
        assert pinned.json()["version"] == latest["version"]

        new = {"id": "polite", "principles": [{"id": "p", "question": "Which is more polite?"}]}
        created = await http.post("/v1/constitutions", json=new)
        assert created.status_code == 201
        version = created.json()["version"]
        label = await http.post(
            "/v1/labels", json={"constitution": f"polite@{version}", "pairs": [PAIR]}
        )
        assert label.json()["labels"][0]["constitution"] == {"id": "polite", "version": version}

        bad = {"id": "polite", "principles": [{"id": "p"}]}
        response = await http.post("/v1/constitutions", json=bad)
        assert_envelope(response, 422, "principles.0.question", "Field required")


async def test_health_and_unknown_route(client: Client):
    async with client() as http:
        assert (await http.get("/health/live")).json()["status"] == "ok"
        ready = await http.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["engine"] == "ok"
        assert_envelope(await http.get("/nope"), 404, None, "Not Found")


async def test_openapi_has_examples_for_every_route(client: Client):
    async with client() as http:
        spec = (await http.get("/openapi.json")).json()
    assert {"/v1/labels", "/v1/constitutions", "/v1/constitutions/{ref}", "/health/ready"} <= set(
        spec["paths"]
    )
    schemas = spec["components"]["schemas"]
    for name in ("LabelRequest", "LabelResponse", "ErrorEnvelope", "ConstitutionList", "Pair"):
        assert schemas[name].get("examples"), name


async def test_grafana_dashboard_only_uses_exported_metrics(client: Client):
    import json
    import re

    dashboard = REPO_ROOT / "docker" / "grafana-dashboard.json"
    panels = json.loads(dashboard.read_text())["panels"]
    titles = " ".join(p["title"].lower() for p in panels)
    for needed in ("pairs", "p99", "queue", "rejections", "cache hit", "consistency", "mass"):
        assert needed in titles
    names = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"cai_judge_[a-z_]+", target["expr"])
    }
    async with client() as http:
        await http.post(
            "/v1/labels", json={"constitution": "harmless", "pairs": [PAIR], "principles": 1}
        )
        exported = (await http.get("/metrics")).text
    for name in sorted(names):
        assert re.search(rf"^{name}(_bucket|_sum|_count)?[{{ ]", exported, re.MULTILINE), name


async def test_builtin_constitution_ids_are_reserved(client: Client):
    async with client() as http:
        before = (await http.get("/v1/constitutions/harmless")).json()
        hijack = {"id": "harmless", "principles": [{"id": "p", "question": "Which is shorter?"}]}
        response = await http.post("/v1/constitutions", json=hijack)
        assert_envelope(response, 409, "id", "'harmless' is reserved")
        assert response.json()["error"]["type"] == "reserved_id"
        # Unpinned requests still get the built-in principles.
        after = (await http.get("/v1/constitutions/harmless")).json()
        assert after["version"] == before["version"]
        assert (await http.get("/v1/constitutions")).json()["constitutions"][0]["versions"]


async def test_adding_constitutions_needs_an_admin_key(client: Client):
    keys = {"api_key_hashes": [hash_api_key("user")], "admin_key_hashes": [hash_api_key("root")]}
    new = {"id": "polite", "principles": [{"id": "p", "question": "Which is more polite?"}]}
    async with client(**keys) as http:
        user, admin = {"X-API-Key": "user"}, {"X-API-Key": "root"}
        assert_envelope(await http.post("/v1/constitutions", json=new), 401, "authorization")
        response = await http.post("/v1/constitutions", json=new, headers=user)
        assert_envelope(response, 403, "authorization", "admin key")
        assert (await http.get("/v1/constitutions/polite", headers=user)).status_code == 404
        assert (await http.post("/v1/constitutions", json=new, headers=admin)).status_code == 201
        # An admin key is an ordinary key too; the new id is visible to every key.
        assert (await http.get("/v1/constitutions/polite", headers=user)).status_code == 200
        body = {"constitution": "polite", "pairs": [PAIR]}
        assert (await http.post("/v1/labels", json=body, headers=admin)).status_code == 200


async def test_docs_and_openapi_sit_behind_the_key(client: Client):
    async with client(api_key_hashes=[hash_api_key("s3cret")]) as http:
        for path in ("/docs", "/openapi.json", "/metrics"):
            assert_envelope(await http.get(path), 401, "authorization")
            assert (await http.get(path, headers={"X-API-Key": "s3cret"})).status_code == 200
        assert (await http.get("/health/live")).status_code == 200
    async with client() as http:  # no keys configured: open, as before
        assert (await http.get("/openapi.json")).status_code == 200
        assert "swagger" in (await http.get("/docs")).text.lower()


async def test_token_budget_is_refused_with_the_numbers(client: Client):
    async with client(max_tokens_per_request=100) as http:
        body = {"constitution": "harmless", "pairs": [PAIR], "principles": 2}
        response = await http.post("/v1/labels", json=body)
        assert_envelope(response, 422, "pairs", "over the limit of 100 tokens", "4 score units")
        assert response.json()["error"]["type"] == "request_too_large"
        # Nothing was admitted: the queue is empty and the engine saw no unit.
        state = http.app.state.services.admission  # type: ignore[attr-defined]
        assert state.queued_units == 0 and state.active_requests == 0


async def test_seed_bound_is_exact_in_json(client: Client):
    async with client() as http:
        body = {"constitution": "harmless", "pairs": [PAIR], "principles": 1}
        ok = await http.post("/v1/labels", json={**body, "seed": 2**53 - 1})
        assert ok.status_code == 200 and ok.json()["labels"][0]["seed"] == 2**53 - 1
        response = await http.post("/v1/labels", json={**body, "seed": 2**53})
        assert_envelope(response, 422, "seed", "must be at most 9007199254740991")
        spec = (await http.get("/openapi.json")).json()
        seed_schema = spec["components"]["schemas"]["LabelRequest"]["properties"]["seed"]
        assert seed_schema["maximum"] == 2**53 - 1


async def test_chat_role_order_is_a_per_item_error(client: Client):
    async with client() as http:
        bad_order = {
            **PAIR,
            "id": "bad",
            "prompt": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}],
        }
        ends_on_assistant = {**PAIR, "id": "ends", "prompt": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}]}  # fmt: skip
        good = {
            **PAIR,
            "id": "good",
            "prompt": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "egg?"},
            ],
        }
        response = await http.post(
            "/v1/labels",
            json={"constitution": "harmless", "principles": 1,
                  "pairs": [bad_order, good, ends_on_assistant]},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        first, second, third = response.json()["labels"]
        assert first["error"]["param"] == "pairs.0.prompt.1.role"
        assert third["error"]["param"].startswith("pairs.2.prompt.2")
        assert "user" in third["error"]["message"]
        assert second["id"] == "good" and "margin" in second


async def test_tokenizing_a_large_request_does_not_block_the_event_loop(client: Client):
    import asyncio

    words = "some long response text that the tokenizer has to chew through " * 5
    pairs = [
        {**PAIR, "id": f"big{i}", "response_a": f"{i} {words}", "response_b": f"{words} {i}"}
        for i in range(200)
    ]
    order: list[str] = []
    # A budget most of the request fits under: rendering now stops once past the budget
    # (issue 28), and a budget of 1,000 tokens stopped it after the first chunk.
    async with client(max_tokens_per_request=1_500_000, max_body_bytes=2**25) as http:

        async def labels() -> httpx.Response:
            response = await http.post("/v1/labels", json={"constitution": "harmless",
                                                            "pairs": pairs})  # fmt: skip
            order.append("labels")
            return response

        async def live() -> None:
            await asyncio.sleep(0.05)  # the labels request is rendering by now
            assert (await http.get("/health/live")).status_code == 200
            order.append("live")

        response, _ = await asyncio.gather(labels(), live())
    # Refused after rendering most of its 400 prefixes, with the numbers; the probe was
    # answered while the rendering ran (in the Judge's thread), not after it.
    assert_envelope(response, 422, "pairs", "over the limit of 1500000 tokens")
    assert order == ["live", "labels"]


async def test_calibrated_cot_is_refused_up_front_not_500(client: Client, tmp_path: Path):
    """A plain profile fits the request's key, so without the up-front check the CoT labels
    were made and then `calibrate_label` raised ProfileMismatch (a ValueError): a 500."""
    async with client() as http:
        services = http.app.state.services  # type: ignore[attr-defined]
        spec = services.labels.registry.resolve("harmless")
        key = ProfileKey(
            model=services.judge.engine.model_name,
            template=TemplateRef(
                id=spec.template, version=services.judge.renderer(spec.template).version
            ),
            constitution=ConstitutionRef(id=spec.id, version=spec.version),
            aggregator=Aggregator.MEAN_LOGODDS,
            selection=1,
        )
    record = FitRecord(
        gold_sha256="0" * 64, gold_pairs=100, folds=5, seed=0, ece_raw=0.2,
        ece_cross_validated=0.1, brier_raw=0.26, brier_cross_validated=0.24,
    )  # fmt: skip
    profile = CalibrationProfile.create(key, CalibrationTerms(inverse_temperature=0.5), record)
    (tmp_path / "harmless.json").write_text(profile.to_json())
    body = {"constitution": "harmless", "pairs": [PAIR], "principles": 1, "calibrated": True}
    async with client(calibration_dir=tmp_path) as http:
        plain = await http.post("/v1/labels", json=body)
        assert plain.status_code == 200, plain.text  # the profile applies to plain labels
        assert plain.json()["labels"][0]["calibration"]["profile"] == profile.hash
        cot = await http.post("/v1/labels", json=body | {"mode": "cot", "cot_max_tokens": 4})
        assert_envelope(cot, 422, "calibrated", "mode plain")
        assert cot.json()["error"]["type"] == "calibration_unavailable"
        # Refused before any engine work: no rationale was written.
        metrics = (await http.get("/metrics")).text
        assert "cai_judge_cot_rationales_total{" in metrics
        assert not [
            line for line in metrics.splitlines()
            if line.startswith("cai_judge_cot_rationales_total{") and not line.endswith(" 0.0")
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "status", "kind", "param"),
    [
        (ProfileMismatch("profile abc does not apply: model", ["model"]), 422,
         "calibration_mismatch", "calibrated"),
        (CalibrationError("this profile has a length term"), 422, "calibration_error",
         "calibrated"),
        (ConstitutionError("x.yaml: bad"), 422, "invalid_constitution", "constitution"),
        (TemplateError("answers map to the same token"), 422, "template_error", "constitution"),
        (ValueError("a bug"), 500, "internal_error", None),
    ],
)  # fmt: skip
async def test_domain_value_errors_are_never_500(
    client: Client, error: ValueError, status: int, kind: str, param: str | None
):
    """Whatever domain ValueError escapes a service reaches the client as 422 naming the
    field (a plain ValueError is a bug: 500, and nothing of it in the answer)."""
    async with client() as http:
        app = http.app  # type: ignore[attr-defined]

        async def raising() -> None:
            raise error

        app.add_api_route("/test/raise", raising)
        response = await http.get("/test/raise")
        assert response.status_code == status, response.text
        assert response.json()["error"]["type"] == kind
        assert response.json()["error"]["param"] == param
        if status == 500:
            assert "a bug" not in response.text
    # gRPC maps the same errors to the same situation.
    mapped = domain_to_grpc(error)
    if status == 422:
        assert mapped is not None and mapped.code == grpc.StatusCode.INVALID_ARGUMENT
    else:
        assert mapped is None
