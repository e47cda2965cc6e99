"""label_dataset's bookkeeping where a live server cannot be made to misbehave on demand:
chunks that finish out of order, and chunks refused as too large (halved, then reported
in place). Both clients."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import respx

import cai_judge_client as sdk
from sdk_support import BASE_URL, Judge, label_json, pairs


def answer(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)["pairs"]
    return httpx.Response(
        200, json={"labels": [label_json(p["id"]) for p in sent], "usage": {"pairs": len(sent)}}
    )


async def test_results_keep_input_order_when_chunks_finish_out_of_order(judge: Judge) -> None:
    def slow_first(request: httpx.Request) -> httpx.Response:
        first_id = json.loads(request.content)["pairs"][0]["id"]
        if first_id == "p0":
            time.sleep(0.3)  # the first chunk answers last
        return answer(request)

    with respx.mock(base_url=BASE_URL) as mock:
        mock.post("/v1/labels").mock(side_effect=slow_first)
        summary = await judge(
            "label_dataset", pairs(12), constitution="harmless", chunk_size=3, concurrency=4
        )
    assert [r.id for r in summary.results] == [f"p{i}" for i in range(12)]
    assert summary.usage.pairs == 12


async def test_a_chunk_too_large_is_halved_and_a_single_refused_pair_is_reported(
    judge: Judge,
) -> None:
    too_large = {"error": {"type": "request_too_large", "message": "over 100 tokens",
                           "param": "pairs"}}  # fmt: skip

    def refuse_big_and_p2(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)["pairs"]
        if len(sent) > 2 or any(p["id"] == "p2" for p in sent):
            return httpx.Response(422, json=too_large)
        return answer(request)

    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(side_effect=refuse_big_and_p2)
        summary = await judge(
            "label_dataset", pairs(8), constitution="harmless", chunk_size=8, concurrency=1
        )
    assert [r.id for r in summary.results] == [f"p{i}" for i in range(8)]
    assert summary.labeled == 7 and summary.failed == 1
    (error,) = summary.errors
    assert isinstance(error, sdk.PairError) and (error.id, error.index) == ("p2", 2)
    assert error.error.type == "request_too_large"
    # 8 -> 4+4 -> 2+2+2+2 -> (p2,p3) -> p2 + p3: no more requests than that.
    assert route.call_count == 1 + 2 + 4 + 2


async def test_an_option_error_is_raised_not_split(judge: Judge) -> None:
    bad_option = {"error": {"type": "invalid_request", "message": "k <= 16", "param": "principles"}}
    with respx.mock(base_url=BASE_URL) as mock:
        route = mock.post("/v1/labels").mock(return_value=httpx.Response(422, json=bad_option))
        with pytest.raises(sdk.UnprocessableEntityError) as raised:
            await judge("label_dataset", pairs(8), constitution="harmless", principles=99)
    assert raised.value.param == "principles"
    assert route.call_count == 1  # one chunk of 8; refused for its options, never split


async def test_resume_labels_again_a_pair_whose_stored_result_was_transient(
    judge: Judge, tmp_path
) -> None:
    """A first run met an unreachable engine for p1 (a transient per-pair error): resuming
    labels p1 again, and the pairs after it, instead of keeping the error for good."""
    output = tmp_path / "labels.jsonl"
    transient = {"id": "p1", "index": 1,
                 "error": {"type": "engine_unavailable", "message": "no vLLM server"}}  # fmt: skip
    lines = [label_json("p0"), transient, label_json("p2")]
    output.write_text("".join(json.dumps(line) + "\n" for line in lines))
    sent: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.extend(p["id"] for p in json.loads(request.content)["pairs"])
        return answer(request)

    with respx.mock(base_url=BASE_URL) as mock:
        mock.post("/v1/labels").mock(side_effect=record)
        summary = await judge(
            "label_dataset", pairs(4), constitution="harmless", output=output, principles=1
        )
    assert sent == ["p1", "p2", "p3"]
    assert summary.resumed == 1 and summary.failed == 0
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert [w["id"] for w in written] == ["p0", "p1", "p2", "p3"]
    assert all("error" not in w for w in written)
