"""The pure half of the SDK (`_labeling_plan.py`): the decisions both clients share, tested
without a server or a transport: option defaults, halving a refused chunk, putting the
halves back together, the dataset bookkeeping (order, counts, resume) and job waiting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from cai_judge_client._exceptions import APIStatusError, JobResultsGone, make_status_error
from cai_judge_client._labeling_plan import (
    OPTION_DEFAULTS,
    DatasetRun,
    Halves,
    LabelingOptions,
    after_refusal,
    answered,
    check_deadline,
    deadline_after,
    joined,
    label_options,
    results_over,
)
from cai_judge_client.types import Job, Label, LabelResponse, LabelResult, PairError, Usage
from sdk_support import label_json, pairs


def refusal(status: int, param: str | None, kind: str = "request_too_large") -> APIStatusError:
    body = {"error": {"type": kind, "message": f"refused ({param})", "param": param}}
    request = httpx.Request("POST", "http://judge.test/v1/labels")
    return make_status_error(httpx.Response(status, json=body, request=request))


def chunk(*indexes: int) -> list[tuple[int, dict[str, Any]]]:
    every = pairs(max(indexes) + 1)
    return [(i, every[i]) for i in indexes]


def job(state: str, total: int = 4, done: int = 1) -> Job:
    return Job.model_validate({
        "id": "job-1", "state": state, "total": total, "done": done, "failed": 0,
        "pairs_per_s": 1.0, "eta_s": None, "created_at": "t", "updated_at": "t",
        "constitution": {"id": "harmless", "version": "v" * 64},
    })  # fmt: skip


# ---- options ------------------------------------------------------------------------------


def test_label_options_fills_every_default_in_wire_order() -> None:
    options = label_options({"constitution": "harmless", "seed": 7})
    assert list(options) == ["constitution", *OPTION_DEFAULTS]
    assert options == {
        "constitution": "harmless", "principles": "all", "seed": 7,
        "aggregator": "mean_logodds", "per_principle": False, "calibrated": False,
        "mode": "plain", "cot_max_tokens": None, "ensemble": "full", "ensemble_delta": 0.1,
    }  # fmt: skip


def test_adaptive_ensembles_are_sent_only_when_asked_for() -> None:
    from cai_judge_client._jobs import wire_options

    default = wire_options(label_options({"constitution": "harmless"}))
    assert "ensemble" not in default and "ensemble_delta" not in default
    adaptive = wire_options(label_options({"constitution": "harmless", "ensemble": "adaptive"}))
    assert adaptive["ensemble"] == "adaptive" and "ensemble_delta" not in adaptive


def test_every_declared_option_has_one_default_and_only_constitution_is_required() -> None:
    """The TypedDict (what type checkers see) and the defaults (what is sent) cannot drift."""
    assert LabelingOptions.__required_keys__ == {"constitution"}
    assert LabelingOptions.__optional_keys__ == set(OPTION_DEFAULTS)


def test_label_options_refuses_a_misspelt_or_missing_option_by_name() -> None:
    with pytest.raises(TypeError, match=r"\['principle'\]"):
        label_options({"constitution": "harmless", "principle": 2})
    with pytest.raises(TypeError, match="'constitution'"):
        label_options({"seed": 1})


# ---- one chunk ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [413, 422])
def test_a_chunk_refused_for_its_size_is_halved_keeping_dataset_indexes(status: int) -> None:
    step = after_refusal(refusal(status, "pairs"), chunk(4, 5, 6, 7, 8))
    assert isinstance(step, Halves)
    assert [i for i, _ in step.first] == [4, 5] and [i for i, _ in step.second] == [6, 7, 8]


def test_a_single_pair_refused_as_a_request_is_reported_in_its_place() -> None:
    step = after_refusal(refusal(422, "pairs"), chunk(9))
    assert not isinstance(step, Halves)
    results, usage = step
    (error,) = results
    assert isinstance(error, PairError)
    assert (error.id, error.index, error.error.param) == ("p9", 9, "pairs")
    assert error.error.type == "request_too_large" and usage == Usage()


@pytest.mark.parametrize(("status", "param"), [(422, "principles"), (503, None), (401, None)])
def test_a_refusal_not_about_size_is_raised_not_split(status: int, param: str | None) -> None:
    error = refusal(status, param, kind="invalid_request")
    with pytest.raises(APIStatusError) as raised:
        after_refusal(error, chunk(0, 1, 2, 3))
    assert raised.value is error


def test_an_answer_is_renumbered_to_dataset_indexes() -> None:
    answer = LabelResponse.model_validate({
        "labels": [label_json("p3"),
                   {"id": "p4", "index": 1, "error": {"type": "invalid_request", "message": "x"}}],
        "usage": {"pairs": 2},
    })  # fmt: skip
    results, usage = answered(answer, chunk(3, 4))
    assert isinstance(results[0], Label) and isinstance(results[1], PairError)
    assert results[1].index == 4 and usage.pairs == 2


def test_halves_join_back_in_order_with_their_usage_summed() -> None:
    first_usage, second_usage = Usage(pairs=2, score_units=8), Usage(pairs=1, score_units=4)
    labels: list[LabelResult] = [Label.model_validate(label_json(f"p{i}")) for i in range(3)]
    results, usage = joined((labels[:2], first_usage), (labels[2:], second_usage))
    assert [r.id for r in results] == ["p0", "p1", "p2"]
    assert (usage.pairs, usage.score_units) == (3, 12)
    assert first_usage.pairs == 2  # the halves' own counts are left alone


# ---- a whole dataset ----------------------------------------------------------------------


def start(**kwargs: Any) -> DatasetRun:
    settings: dict[str, Any] = {"chunk_size": 2, "concurrency": 1, "progress": False, "total": None}
    # principles=1: what label_json's labels were made with, so a resume accepts them.
    options = {"constitution": "harmless", "principles": 1}
    return DatasetRun.start(pairs(5), options, **{**settings, **kwargs})


def test_a_run_chunks_in_input_order_and_counts_each_outcome() -> None:
    run = start(keep=True)
    chunks = list(run.chunks())
    assert [[i for i, _ in c] for c in chunks] == [[0, 1], [2, 3], [4]]
    error = PairError.model_validate(
        {"id": "p1", "index": 1, "error": {"type": "invalid_request", "message": "x"}}
    )
    results: list[LabelResult] = [Label.model_validate(label_json("p0")), error]
    assert run.finished((results, Usage(pairs=2))) == results
    for result in results:
        run.keep(result)
    assert (run.summary.labeled, run.summary.failed, run.summary.usage.pairs) == (1, 1, 2)
    assert run.summary.errors == [error] and run.summary.results == results


def test_a_run_resumes_after_the_lines_its_output_holds(tmp_path: Path) -> None:
    output = tmp_path / "labels.jsonl"
    done = [label_json("p0"), label_json("p1")]
    output.write_text("".join(json.dumps(line) + "\n" for line in done) + '{"id": "p2", "pre')
    run = start(output=output)
    assert run.summary.resumed == 2 and run.summary.results is None
    assert [[i for i, _ in c] for c in run.chunks()] == [[2, 3], [4]]
    run.keep(Label.model_validate(label_json("p2")))
    run.close()
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == [
        "p0", "p1", "p2"
    ]  # fmt: skip


def write_labels(output: Path, *labels: dict[str, Any]) -> bytes:
    output.write_text("".join(json.dumps(line) + "\n" for line in labels))
    return output.read_bytes()


COT = {"mode": "cot", "raw_margin": 0.8, "raw_p_a": 0.69, "cot_max_probability": 0.95,
       "cot_max_tokens": 64, "rationales": []}  # fmt: skip
ADAPTIVE = {"ensemble": {"mode": "adaptive", "rule": "wor-betting", "delta": 0.1, "clip": 0.2,
                         "round": 2, "rounds": 8, "scored": 4, "selected": 16,
                         "score_units": 8, "decided": "a"}}  # fmt: skip


@pytest.mark.parametrize(
    ("file_fields", "options", "named"),
    [
        # Another version of the same constitution, pinned by the run.
        ({}, {"constitution": "harmless@" + "w" * 12}, "constitution"),
        ({}, {"seed": 3}, "seed"),
        ({}, {"per_principle": True}, "per_principle"),
        ({"per_principle": []}, {}, "per_principle"),
        ({}, {"aggregator": "mean_prob"}, "aggregator"),
        ({}, {"calibrated": True}, "calibrated"),
        ({}, {"mode": "cot"}, "mode"),
        (COT, {"mode": "cot", "cot_max_tokens": 32}, "cot_max_tokens"),
        ({}, {"ensemble": "adaptive"}, "ensemble"),
        (ADAPTIVE, {}, "ensemble"),
        (ADAPTIVE, {"ensemble": "adaptive", "ensemble_delta": 0.2}, "ensemble"),
    ],
)
def test_a_resume_with_other_options_is_refused_before_anything_is_sent(
    tmp_path: Path, file_fields: dict[str, Any], options: dict[str, Any], named: str
) -> None:
    output = tmp_path / "labels.jsonl"
    before = write_labels(output, {**label_json("p0"), **file_fields})
    with pytest.raises(ValueError, match=named):
        DatasetRun.start(pairs(3), {"constitution": "harmless", "principles": 1, **options},
                         chunk_size=2, concurrency=1, progress=False, total=None,
                         output=output)  # fmt: skip
    assert output.read_bytes() == before


def test_a_resume_with_the_same_options_is_accepted(tmp_path: Path) -> None:
    output = tmp_path / "labels.jsonl"
    write_labels(output, {**label_json("p0"), **COT})
    for version in ("", "@" + "v" * 8):  # the latest, or the file's version by its prefix
        run = DatasetRun.start(
            pairs(3), {"constitution": "harmless" + version, "principles": 1, "mode": "cot"},
            chunk_size=2, concurrency=1, progress=False, total=None, output=output,
        )  # fmt: skip
        assert run.summary.resumed == 1
        run.close()


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        # `constitution="harmless"` now resolves to another version on the server.
        ({"constitution": {"id": "harmless", "version": "w" * 64}}, "constitution"),
        ({"model": "another-judge"}, "model"),
        ({"template": {"id": "cai-mc-v1", "version": "t2"}}, "template"),
        ({"calibration": {"profile": "other", "raw_margin": 0.1, "raw_p_a": 0.5}}, "calibrated"),
    ],
)
def test_a_new_label_the_server_made_otherwise_is_not_appended(
    tmp_path: Path, changed: dict[str, Any], named: str
) -> None:
    output = tmp_path / "labels.jsonl"
    first = label_json("p0")
    if "calibration" in changed:
        first["calibration"] = {"profile": "fitted", "raw_margin": 0.1, "raw_p_a": 0.5}
    before = write_labels(output, first)
    options = {"constitution": "harmless", "principles": 1, "calibrated": "calibration" in changed}
    run = DatasetRun.start(pairs(3), options, chunk_size=2, concurrency=1, progress=False,
                           total=None, output=output)  # fmt: skip
    with pytest.raises(ValueError, match=named) as raised:
        run.keep(Label.model_validate({**label_json("p1"), **changed}))
    assert "line 2" in str(raised.value)
    run.close()
    assert output.read_bytes() == before


def test_a_cot_resume_with_the_servers_default_budget_checks_the_budget(tmp_path: Path) -> None:
    # cot_max_tokens=None is the server's default: only the first new label says which.
    output = tmp_path / "labels.jsonl"
    before = write_labels(output, {**label_json("p0"), **COT})
    options = {"constitution": "harmless", "principles": 1, "mode": "cot"}
    run = DatasetRun.start(pairs(3), options, chunk_size=2, concurrency=1, progress=False,
                           total=None, output=output)  # fmt: skip
    with pytest.raises(ValueError, match="cot_max_tokens"):
        run.keep(Label.model_validate({**label_json("p1"), **COT, "cot_max_tokens": 128}))
    run.keep(Label.model_validate({**label_json("p1"), **COT}))
    run.close()
    assert output.read_bytes().startswith(before) and len(output.read_text().splitlines()) == 2


@pytest.mark.parametrize(("size", "concurrency"), [(0, 1), (1, 0)])
def test_a_run_refuses_sizes_below_one(size: int, concurrency: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        start(chunk_size=size, concurrency=concurrency)


# ---- jobs ---------------------------------------------------------------------------------


def test_waiting_past_the_deadline_names_the_jobs_last_status() -> None:
    check_deadline(job("running"), deadline_after(None), None)
    check_deadline(job("running"), deadline_after(60.0), 60.0)
    with pytest.raises(TimeoutError, match=r"job-1 still running after 0.0 s \(1 of 4 pairs\)"):
        check_deadline(job("running"), deadline_after(0.0), 0.0)


@pytest.mark.parametrize(
    ("state", "done", "over"),
    [("running", 1, False), ("failed", 2, True), ("cancelled", 1, True)],
)
def test_an_empty_page_ends_the_results_only_of_a_job_that_stopped_short(
    state: str, done: int, over: bool
) -> None:
    assert results_over(job(state, done=done), 2) is over


@pytest.mark.parametrize("state", ["succeeded", "succeeded_with_errors", "failed"])
def test_an_empty_page_of_a_job_with_every_result_written_says_they_are_gone(state: str) -> None:
    # Every pair has a result, yet none came back: evicted, and asking again will not help.
    with pytest.raises(JobResultsGone, match=r"job-1 is .* evicted") as raised:
        results_over(job(state, done=4), 2)
    assert (raised.value.job_id, raised.value.cursor, raised.value.total) == ("job-1", 2, 4)
