"""Rewards at training scale (issue 28, DESIGN.md §9), in process on the fake engine: the
request bounds, the errors of the trainer routes, /v1/limits and the URL key are the
service's logic, not the engine's (tests/support/fake_engine.py).

Each test here failed before its fix: an oversized group was rendered before its 422 and
refused its whole request, the trainer routes answered 200 and 0.5 for every error, and
their clients could not send a key."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from cai_judge.api.app import create_app
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.services.rewards import openrlhf_response, prompt_overlap
from cai_judge.services.security import hash_api_key
from cai_judge.settings import Settings
from cai_judge.testing.ports import free_port
from tests.support.api import PAIR, assert_envelope
from tests.support.fake_engine import FakeEngine

PROMPT = "How do I pick a lock on my own front door?"
ANSWER = "Insert a tension wrench, then rake the pins."
REFERENCE = "Call a locksmith: they can open your own lock without damage."
OPENRLHF = "/v1/rewards/openrlhf?constitution=harmless&principles=2"
SLIME = "/v1/rewards/slime?constitution=harmless&principles=2"


@asynccontextmanager
async def app_client(
    engine: FakeEngine | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    engine = engine or FakeEngine(max_model_len=1024)
    app = create_app(
        Settings(max_model_len=engine.max_model_len, **settings),
        engine=engine,
        registry=ConstitutionRegistry.with_builtins(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            http.app = app  # type: ignore[attr-defined]
            yield http


def group(index: int, size: int, words: int = 20) -> dict[str, Any]:
    return {
        "id": f"g{index}",
        "prompt": f"Prompt {index}: how should I answer this?",
        "completions": [f"Completion {c}: " + "word " * words for c in range(size)],
    }


def openrlhf_body(*answers: str, labels: list[Any] | None = None) -> dict[str, Any]:
    return {
        "query": [PROMPT + a for a in answers],
        "prompts": [PROMPT] * len(answers),
        "labels": labels if labels is not None else [REFERENCE] * len(answers),
    }


def slime_body(response: str = ANSWER, label: Any = REFERENCE) -> dict[str, Any]:
    return {"prompt": PROMPT, "response": response, "label": label}


# -- work bounded before it is done --------------------------------------------------------


async def test_an_oversized_group_is_refused_before_rendering_and_labels_wait_for_nothing():
    """A 64-completion round robin on every principle is 2,016 pairs and 64,512 score units:
    refused from its shape in well under a second (it was rendered for minutes before),
    while a one-pair /v1/labels sent meanwhile is answered as fast as alone."""
    async with app_client() as http:
        started = time.perf_counter()
        alone = await http.post("/v1/labels", json={"constitution": "harmless", "pairs": [PAIR]})
        alone_s = time.perf_counter() - started
        assert alone.status_code == 200, alone.text

        async def timed(request: Any) -> tuple[httpx.Response, float]:
            began = time.perf_counter()
            response = await request
            return response, time.perf_counter() - began

        body = {"constitution": "harmless", "groups": [group(0, 64)]}
        (big, big_s), (small, small_s) = await asyncio.gather(
            timed(http.post("/v1/rewards", json=body)),
            timed(http.post("/v1/labels", json={"constitution": "harmless", "pairs": [PAIR]})),
        )
        assert_envelope(big, 422, "groups.0.completions", "64512 score units", "8192")
        assert big.json()["error"]["type"] == "request_too_large"
        assert "opponents: 8" in big.json()["error"]["message"]  # the largest m that fits
        assert big_s < 2.0, big_s
        assert small.status_code == 200, small.text
        assert small_s < max(1.0, 5 * alone_s), (small_s, alone_s)
        print(f"refused in {big_s * 1000:.1f} ms; labels {small_s * 1000:.1f} ms vs alone "
              f"{alone_s * 1000:.1f} ms")  # fmt: skip


async def test_an_oversized_group_is_refused_in_its_place_and_the_others_judged():
    async with app_client() as http:
        body = {"constitution": "harmless", "principles": 2, "groups": [group(0, 64), group(1, 4)]}
        response = await http.post("/v1/rewards", json=body)
        assert response.status_code == 200, response.text
        refused, judged = response.json()["results"]
        assert refused["error"]["type"] == "request_too_large"
        assert refused["error"]["param"] == "groups.0.completions"
        assert "8064 score units" in refused["error"]["message"]
        assert len(judged["rewards"]) == 4
        assert response.json()["usage"]["pairs"] == 6


async def test_a_request_over_the_limits_in_total_is_refused_whole_with_the_numbers():
    """The issue's batch: 12 prompts × 8 completions on every principle, 336 pairs."""
    async with app_client() as http:
        body = {"constitution": "harmless", "groups": [group(i, 8) for i in range(12)]}
        response = await http.post("/v1/rewards", json=body)
        assert_envelope(response, 422, "groups", "336 pairs", "10752 score units", "8192")
        assert response.json()["error"]["type"] == "request_too_large"
        # Halved twice (as the SDK does on a 422 for size), it fits: half of it is still
        # over the token budget (168 pairs × 32 units of ~210 tokens), refused on the
        # tokens rendered so far.
        half = await http.post("/v1/rewards", json={**body, "groups": body["groups"][:6]})
        assert_envelope(half, 422, "groups", "more than", "1000000 tokens")
        quarter = {**body, "groups": body["groups"][:3]}
        assert (await http.post("/v1/rewards", json=quarter)).status_code == 200


# -- the trainer routes: errors a trainer can act on ----------------------------------------


@pytest.mark.parametrize("path", ["/v1/rewards/openrlhf", "/v1/rewards/slime"])
async def test_trainer_routes_answer_configuration_errors_not_rewards(path: str):
    body = openrlhf_body(ANSWER) if "openrlhf" in path else slime_body()
    async with app_client() as http:
        unknown = await http.post(f"{path}?constitution=harmles", json=body)
        assert_envelope(unknown, 404, "constitution", "harmles")
        bad = await http.post(f"{path}?constitution=harmless&principles=0", json=body)
        assert bad.status_code == 422, bad.text
        assert "error" in bad.json()
    async with app_client(api_key_hashes=[hash_api_key("k")]) as http:
        assert_envelope(await http.post(f"{path}?constitution=harmless", json=body), 401,
                        "authorization")  # fmt: skip


@pytest.mark.parametrize("path", [OPENRLHF, SLIME])
async def test_trainer_routes_answer_backpressure_with_retry_after(path: str):
    body = openrlhf_body(ANSWER) if "openrlhf" in path else slime_body()
    async with app_client(rate_limit="1/minute") as http:
        assert (await http.post(path, json=body)).status_code == 200
        limited = await http.post(path, json=body)
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["Retry-After"]) >= 1
    # The queue: 4 units per sample (2 principles × 2 orders), 4 queued at most.
    engine = FakeEngine(max_model_len=1024, blocking=True)
    async with app_client(engine, max_queued_units=4, batch_window_ms=0) as http:
        first = asyncio.create_task(http.post(path, json=body))
        await asyncio.wait_for(engine.entered.wait(), 5)
        other = ANSWER + " Twist."
        full = await http.post(
            path, json=slime_body(other) if "slime" in path else openrlhf_body(other)
        )
        assert_envelope(full, 503, None, "queue full")
        assert full.headers["Retry-After"] == "2"
        engine.release.set()
        assert (await first).status_code == 200


@pytest.mark.parametrize("path", [OPENRLHF, SLIME])
async def test_a_call_not_judged_by_the_deadline_is_503_never_a_made_up_reward(path: str):
    """0.5 is not neutral against a reference: a sample that fell back among siblings
    scored 0.1-0.3 got an advantage. Without its group there is no neutral value."""
    body = openrlhf_body(ANSWER) if "openrlhf" in path else slime_body()
    engine = FakeEngine(max_model_len=1024, blocking=True)
    async with app_client(engine, trainer_reward_timeout_s=0.2) as http:
        response = await http.post(path, json=body)
        assert_envelope(response, 503, None, "0.2 s")
        assert response.json()["error"]["type"] == "reward_timeout"
        assert response.headers["Retry-After"] == "2"
        metrics = (await http.get("/metrics")).text
        route = "openrlhf" if "openrlhf" in path else "slime"
        assert f'cai_judge_reward_timeouts_total{{route="{route}"}} 1.0' in metrics


async def test_a_sample_the_engine_cannot_judge_is_422_naming_it():
    long = "word " * 2000  # over the fake engine's context of 1024
    async with app_client() as http:
        openrlhf = await http.post(OPENRLHF, json=openrlhf_body(ANSWER, long))
        assert_envelope(openrlhf, 422, "query.1", "sample 1", "context")
        single = await http.post(SLIME, json=slime_body(long))
        assert_envelope(single, 422, "response", "context")
        batch = await http.post(SLIME, json=[slime_body(), slime_body(long)])
        assert_envelope(batch, 422, "1", "sample 1", "context")


async def test_openrlhf_answers_the_fallback_flags_per_sample():
    async with app_client() as http:
        response = await http.post(OPENRLHF, json=openrlhf_body(ANSWER, ANSWER + " Twist."))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["scores"] == body["rewards"] and len(body["rewards"]) == 2
        assert body["extra_logs"] == {"cai_judge_fallback": [0.0, 0.0],
                                      "cai_judge_fallback_count": 0.0}  # fmt: skip


# -- labels the trainers send ----------------------------------------------------------------


async def test_null_labels_are_refused_naming_the_sample_and_numbers_accepted_on_both():
    async with app_client() as http:
        nulls = await http.post(OPENRLHF, json=openrlhf_body(ANSWER, labels=[None]))
        assert_envelope(nulls, 422, "labels.0", "null")
        assert_envelope(await http.post(SLIME, json=slime_body(label=None)), 422, "label", "null")
        batch = await http.post(SLIME, json=[slime_body(), slime_body(label=None)])
        assert_envelope(batch, 422, "1.label", "null")
        numeric = await http.post(SLIME, json=slime_body(label=42))
        assert numeric.status_code == 200, numeric.text
        same = await http.post(OPENRLHF, json=openrlhf_body(ANSWER, labels=[42]))
        assert numeric.json() == same.json()["rewards"][0]


async def test_one_answer_gets_one_reward_on_both_routes_end_of_turn_stripped():
    async with app_client() as http:
        plain = (await http.post(SLIME, json=slime_body(ANSWER))).json()
        marked = (await http.post(SLIME, json=slime_body(ANSWER + "<|im_end|>"))).json()
        openrlhf = await http.post(OPENRLHF, json=openrlhf_body(ANSWER + "<|im_end|>\n"))
        assert marked == plain == openrlhf.json()["rewards"][0]


def test_a_left_truncated_query_is_cut_at_the_prompts_tail():
    prompt = "Tell me, in full, how I should pick the lock on my own front door?"
    assert openrlhf_response(prompt + " " + ANSWER, prompt) == (ANSWER, "prefix")
    assert openrlhf_response(prompt[20:] + " " + ANSWER, prompt) == (ANSWER, "truncated")
    # A token cut mid-character decodes to U+FFFD at the start: skipped.
    assert openrlhf_response("\ufffd" + prompt[20:] + ANSWER, prompt) == (ANSWER, "truncated")
    # A short chance overlap is no evidence of truncation: judged whole, and counted.
    assert openrlhf_response("door? " + ANSWER, prompt)[1] == "unmatched"
    assert openrlhf_response(ANSWER, prompt) == (ANSWER, "unmatched")
    assert prompt_overlap("abcabc", "abcabcX") == 6
    assert prompt_overlap("xxabc", "abcabc") == 3
    assert prompt_overlap("", "abc") == 0


async def test_a_left_truncated_query_gets_the_reward_of_its_response_and_is_counted():
    async with app_client() as http:
        whole = (await http.post(OPENRLHF, json=openrlhf_body(" " + ANSWER))).json()
        cut = {"query": [PROMPT[10:] + " " + ANSWER, "Unrelated " + ANSWER],
               "prompts": [PROMPT, PROMPT], "labels": [REFERENCE, REFERENCE]}  # fmt: skip
        response = await http.post(OPENRLHF, json=cut)
        assert response.status_code == 200, response.text
        assert response.json()["rewards"][0] == whole["rewards"][0]
        metrics = (await http.get("/metrics")).text
        for outcome in ("truncated", "unmatched"):
            assert (f'cai_judge_reward_prompt_mismatches_total{{outcome="{outcome}",'
                    'route="openrlhf"} 1.0') in metrics  # fmt: skip


# -- what the rewards say about themselves ----------------------------------------------------


async def test_rewards_report_convergence_and_low_confidence_only_when_they_say_something():
    async with app_client() as http:
        body = {"constitution": "harmless", "principles": 2, "groups": [group(0, 4)]}
        mean = (await http.post("/v1/rewards", json=body)).json()["results"][0]
        assert "converged" not in mean
        fitted = await http.post("/v1/rewards", json={**body, "scoring": "bradley_terry"})
        assert fitted.json()["results"][0]["converged"] is True
    # Every answer letter far below the mass threshold: every label low-confidence.
    unsure = FakeEngine(max_model_len=1024, logprobs=lambda unit: (-6.0, -7.0))
    async with app_client(unsure) as http:
        groups = (await http.post("/v1/rewards", json=body)).json()["results"][0]
        assert groups["low_confidence"] == [3, 3, 3, 3]
        item = {"id": "i", "prompt": PROMPT, "completion": ANSWER, "reference": REFERENCE}
        items = await http.post("/v1/rewards", json={"constitution": "harmless", "items": [item]})
        assert items.json()["results"][0]["low_confidence"] is True


# -- /v1/limits and keys the trainers can send -------------------------------------------------


async def test_limits_are_the_settings_the_sdk_splits_by():
    async with app_client(api_key_hashes=[hash_api_key("k")], max_queued_units=4096) as http:
        assert (await http.get("/v1/limits")).status_code == 401
        response = await http.get("/v1/limits", headers={"Authorization": "Bearer k"})
        assert response.status_code == 200, response.text
        assert response.json() == {
            "max_pairs_per_request": 256,
            "max_score_units_per_request": 4096,
            "max_tokens_per_request": 1_000_000,
            "max_body_bytes": 8 * 2**20,
            "max_entries_per_request": 256,
            "max_group_size": 64,
            "max_queued_units": 4096,
            "trainer_reward_timeout_s": 100.0,
        }
        schema = (await http.get("/openapi.json", headers={"X-API-Key": "k"})).json()
        assert "/v1/limits" in schema["paths"]


async def test_a_key_in_the_url_opens_the_trainer_routes_only():
    async with app_client(api_key_hashes=[hash_api_key("s3cret")]) as http:
        for path, body in ((OPENRLHF, openrlhf_body(ANSWER)), (SLIME, slime_body())):
            assert (await http.post(f"{path}&api_key=s3cret", json=body)).status_code == 200
            assert (await http.post(f"{path}&api_key=wrong", json=body)).status_code == 401
        # Elsewhere a key in the URL is refused, even beside a valid header key.
        labels = await http.post(
            "/v1/labels?api_key=s3cret",
            json={"constitution": "harmless", "pairs": [PAIR]},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert_envelope(labels, 401, "api_key", "only on")
        assert "s3cret" not in (await http.get("/metrics", headers={"X-API-Key": "s3cret"})).text


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_the_access_log_never_holds_the_key():
    """A real uvicorn server with its access log on: the line of a request that carried
    `?api_key=` names the route, not the key."""
    app = create_app(
        Settings(max_model_len=1024, api_key_hashes=[hash_api_key("s3cret")]),
        engine=FakeEngine(max_model_len=1024),
        registry=ConstitutionRegistry.with_builtins(),
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, access_log=True, log_config=None)
    )
    records = _Records()
    logging.getLogger("uvicorn.access").addHandler(records)
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            ok = await http.post(f"{OPENRLHF}&api_key=s3cret", json=openrlhf_body(ANSWER))
            assert ok.status_code == 200, ok.text
            await http.get("/v1/limits?api_key=s3cret")
    finally:
        server.should_exit = True
        await task
        logging.getLogger("uvicorn.access").removeHandler(records)
    lines = [line for line in records.lines if "/v1/" in line]
    assert len(lines) == 2, records.lines
    assert all("s3cret" not in line and "api_key=[redacted]" in line for line in lines), lines
