"""POST /v1/revisions and CoT on /v1/labels, in process, on the fake engine: the same
edges as /v1/labels (limits, 404/413/422/503, auth, metrics, per-item errors)."""

from __future__ import annotations

import pytest

from cai_judge.services.security import hash_api_key
from tests.support.api import PAIR, Client, assert_envelope


@pytest.fixture
def api(client: Client) -> Client:
    """test_api's in-process app factory on the tiny engine."""
    return client


PROMPT = {"id": "r1", "prompt": "How do I boil an egg?"}
BODY = {"constitution": "harmless", "prompts": [PROMPT], "max_tokens": 6}


async def test_revisions_in_order_with_errors_beside_them(api: Client):
    async with api() as http:
        body = {
            **BODY,
            "prompts": [
                PROMPT,
                {"id": "bad", "prompt": ""},
                {"id": "r2", "prompt": "Hi", "initial_response": "Go away."},
            ],
            "rounds": 2,
            "seed": 4,
        }
        response = await http.post("/v1/revisions", json=body)
        assert response.status_code == 200, response.text
        first, bad, second = response.json()["revisions"]
        assert [step["round"] for step in first["chain"]] == [1, 2]
        assert first["initial_generated"] is True and second["initial_generated"] is False
        assert second["initial_response"] == "Go away."
        assert first["response"] == first["chain"][-1]["revision"]
        assert bad == {
            "id": "bad",
            "index": 1,
            "error": {
                "type": "invalid_prompt",
                "message": bad["error"]["message"],
                "param": "prompts.1.prompt",
            },
        }
        assert "at least 1 character" in bad["error"]["message"]
        # 1 initial + 2 prompts x 2 rounds x (critique + revision).
        assert response.json()["usage"]["generations"] == 9
        again = await http.post("/v1/revisions", json=body)
        assert again.json()["revisions"] == response.json()["revisions"]
        metrics = (await http.get("/metrics")).text
        assert 'cai_judge_revisions_total{model="' in metrics
        assert 'cai_judge_generations_total{model="' in metrics
        assert any(
            line.startswith("cai_judge_revision_rounds_total") and line.endswith(" 8.0")
            for line in metrics.splitlines()
        )


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"rounds": 3}, "rounds", ["rounds is 3", "limit of 2 rounds",
                                   "CAI_JUDGE_MAX_REVISION_ROUNDS"]),
        ({"max_tokens": 40}, "max_tokens", ["max_tokens is 40", "limit of 32 tokens"]),
        ({"temperature": 1.5}, "temperature", ["temperature is 1.5", "limit of 1.0"]),
        ({"prompts": [PROMPT] * 3}, "prompts", ["prompts is 3", "limit of 2 prompts"]),
    ],
)  # fmt: skip
async def test_service_limits_are_422_naming_the_limit(api: Client, change, param, words):
    limits = {"max_revision_rounds": 2, "max_generation_tokens": 32, "max_temperature": 1.0,
              "max_prompts_per_revision_request": 2}  # fmt: skip
    async with api(**limits) as http:
        response = await http.post("/v1/revisions", json={**BODY, **change})
        assert_envelope(response, 422, param, *words)


@pytest.mark.parametrize(
    ("change", "param"),
    [({"rounds": 0}, "rounds"), ({"rounds": 17}, "rounds"), ({"temperature": -1}, "temperature"),
     ({"max_tokens": 5000}, "max_tokens"), ({"prompts": []}, "prompts"), ({"extra": 1}, "extra")],
)  # fmt: skip
async def test_schema_bounds(api: Client, change, param):
    async with api() as http:
        response = await http.post("/v1/revisions", json={**BODY, **change})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == param


async def test_unknown_constitution_is_404(api: Client):
    async with api() as http:
        response = await http.post("/v1/revisions", json={**BODY, "constitution": "nope"})
        assert_envelope(response, 404, "constitution", "unknown constitution 'nope'")


async def test_auth_413_and_503(api: Client):
    key = "secret-key"
    async with api(api_key_hashes=[hash_api_key(key)], max_body_bytes=4096) as http:
        assert (await http.post("/v1/revisions", json=BODY)).status_code == 401
        headers = {"Authorization": f"Bearer {key}"}
        big = {**BODY, "prompts": [{"id": "x", "prompt": "y" * 5000}]}
        assert (await http.post("/v1/revisions", json=big, headers=headers)).status_code == 413
        http.app.state.services.admission.start_draining()  # type: ignore[attr-defined]
        response = await http.post("/v1/revisions", json=BODY, headers=headers)
        assert response.status_code == 503 and response.headers["Retry-After"]
    async with api(max_queued_units=2) as http:
        # One prompt and one round need 3 engine requests: never fits in a queue of 2.
        response = await http.post("/v1/revisions", json=BODY)
        assert_envelope(response, 422, "prompts", "3 engine requests", "queue capacity of 2")


async def test_cot_labels_over_http(api: Client):
    async with api(max_cot_tokens=16) as http:
        body = {"constitution": "harmless", "pairs": [PAIR], "principles": 2, "mode": "cot",
                "cot_max_tokens": 8}  # fmt: skip
        response = await http.post("/v1/labels", json=body)
        assert response.status_code == 200, response.text
        (label,) = response.json()["labels"]
        assert label["mode"] == "cot" and len(label["rationales"]) == 2
        assert 0.4 - 1e-12 <= label["p_a"] <= 0.6 + 1e-12
        assert "raw_margin" in label and "raw_p_a" in label
        over = await http.post("/v1/labels", json={**body, "cot_max_tokens": 17})
        assert_envelope(over, 422, "cot_max_tokens", "limit of 16 rationale tokens")
        plain = await http.post("/v1/labels", json={**body, "mode": "plain"})
        assert "rationales" not in plain.json()["labels"][0]
        metrics = (await http.get("/metrics")).text
        assert any(
            line.startswith("cai_judge_cot_rationales_total") and line.endswith(" 4.0")
            for line in metrics.splitlines()
        )
