"""`ensemble: adaptive` on the HTTP routes (issue 31), on the fake engine with agreeing
principles (tests/support/agreeing.py): /v1/labels and /v1/rewards score fewer units and
labels say where they stopped; a bad combination is 422 naming the field."""

from __future__ import annotations

from cai_judge.labeling.ensemble import RULE
from tests.support.agreeing import preferring
from tests.support.api import Client, assert_envelope, pair
from tests.support.fake_engine import FakeEngine


async def test_adaptive_labels_score_fewer_units_and_say_how_many(
    client: Client, fake_engine: FakeEngine
):
    fake_engine.logprobs = preferring(fake_engine.tokenizer)
    body = {"constitution": "harmless", "pairs": [pair(i) for i in range(4)]}
    async with client() as http:
        full = (await http.post("/v1/labels", json=body)).json()
        response = await http.post("/v1/labels", json={**body, "ensemble": "adaptive"})
    assert response.status_code == 200, response.text
    adaptive = response.json()
    assert adaptive["usage"]["score_units"] < full["usage"]["score_units"]
    assert all("ensemble" not in label for label in full["labels"])
    for label, reference in zip(adaptive["labels"], full["labels"], strict=True):
        info = label["ensemble"]
        assert info["rule"] == RULE and info["delta"] == 0.1
        assert info["scored"] == len(label["principles"]) < len(reference["principles"])
        assert label["preferred"] == reference["preferred"] == info["decided"]
    assert (
        sum(label["ensemble"]["score_units"] for label in adaptive["labels"])
        == (adaptive["usage"]["score_units"])
    )


async def test_adaptive_rewards_score_fewer_units(client: Client, fake_engine: FakeEngine):
    fake_engine.logprobs = preferring(fake_engine.tokenizer)
    groups = [
        {"id": f"g{i}", "prompt": p["prompt"], "completions": [p["response_a"], p["response_b"]]}
        for i, p in enumerate(pair(i) for i in range(3))
    ]
    body = {"constitution": "harmless", "groups": groups}
    async with client() as http:
        full = (await http.post("/v1/rewards", json=body)).json()
        response = await http.post(
            "/v1/rewards", json={**body, "ensemble": "adaptive", "ensemble_delta": 0.2}
        )
    assert response.status_code == 200, response.text
    adaptive = response.json()
    assert adaptive["usage"]["score_units"] < full["usage"]["score_units"]
    for mine, theirs in zip(adaptive["results"], full["results"], strict=True):
        # The side of every match is the full ensemble's here, so the ranking is too.
        assert (mine["rewards"][0] > mine["rewards"][1]) == (
            theirs["rewards"][0] > theirs["rewards"][1]
        )


async def test_bad_ensemble_options_are_422_naming_the_field(client: Client):
    body = {"constitution": "harmless", "pairs": [pair(0)]}
    async with client() as http:
        unknown = await http.post("/v1/labels", json={**body, "ensemble": "some"})
        delta = await http.post(
            "/v1/labels", json={**body, "ensemble": "adaptive", "ensemble_delta": 0.9}
        )
        cot = await http.post("/v1/labels", json={**body, "ensemble": "adaptive", "mode": "cot"})
    assert_envelope(unknown, 422, "ensemble")
    assert_envelope(delta, 422, "ensemble_delta", "0.5")
    assert cot.status_code == 422 and "plain" in cot.json()["error"]["message"]
