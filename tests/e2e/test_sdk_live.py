"""The SDK (clients/python) against a real cai-judge server on loopback, tiny model.

One server per module (tests/support's `start_server`), with API keys configured so
authentication is exercised too, and one real redis-server (tests/support/redis_server.py)
behind it, so the batch-jobs calls (docs/DESIGN.md §5) run against the service's own jobs
API and consumer. Every call is tested through both clients: each test is parametrized
over `sync` and `async`, through an adapter that awaits the async client or runs the sync
one in a thread. The contract test (the SDK's models against the service's OpenAPI
document) needs no server: tests/api/test_sdk_contract.py. Failure timing that a live
server cannot produce on demand (retry counts, Retry-After, idempotency keys across
retries, a job slower than `wait_job`'s timeout) is in clients/python/tests with respx.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

import cai_judge_client as sdk
from cai_judge.testing.redis_server import REDIS_SERVER, RedisServer
from cai_judge.testing.service_process import ServiceProcess as Server
from cai_judge.testing.service_process import start_server, stop
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.engine

ROOT = REPO_ROOT
USER_KEY = "sdk-user-key"
ADMIN_KEY = "sdk-admin-key"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own redis-server: the server's jobs, label cache and registry."""
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is missing: run scripts/setup.sh (Debian's redis-server)")
    redis = RedisServer(tmp_path_factory.mktemp("sdk-redis")).start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("sdk-server") / "server.log"
    running = start_server(
        tiny_model_dir,
        log,
        api_key_hashes=json.dumps([digest(USER_KEY)]),
        admin_key_hashes=json.dumps([digest(ADMIN_KEY)]),
        rate_limit="100000/minute",
        retry_after_s="1",
        redis_url=module_redis.url,
        # Small chunks, so a job is several units of work and a cancel can land mid-job.
        jobs_chunk_pairs="4",
    )
    yield running
    stop(running)


def pairs_total(server: Server) -> float:
    text = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {USER_KEY}"}, timeout=10
    ).text
    lines = [line for line in text.splitlines() if line.startswith("cai_judge_pairs_total")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def pair(i: int, words: int = 6) -> dict[str, Any]:
    return {
        "id": f"p{i}",
        "prompt": f"Question {i}: what should I do about the noise next door?",
        "response_a": f"Answer {i}: talk to them politely " + "please " * words,
        "response_b": f"Reply {i}: bang on the wall " + "loudly " * words,
    }


def bad_pair(i: int) -> dict[str, Any]:
    return {**pair(i), "response_b": ""}


class Judge:
    """One face over both clients, so every test runs the same calls sync and async."""

    def __init__(self, kind: str, client: sdk.CaiJudge | sdk.AsyncCaiJudge) -> None:
        self.kind = kind
        self.client = client

    def _call(self, method: str) -> Any:
        """`"label"`, or a resource's call as `"labels.create"`."""
        return functools.reduce(getattr, method.split("."), self.client)

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = self._call(method)
        if self.kind == "async":
            return await call(*args, **kwargs)
        return await asyncio.to_thread(call, *args, **kwargs)

    async def collect(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        if self.kind == "async":
            return [item async for item in self._call(method)(*args, **kwargs)]
        return await asyncio.to_thread(lambda: list(self._call(method)(*args, **kwargs)))


@pytest_asyncio.fixture(params=["sync", "async"], loop_scope="session")
async def judge(request: pytest.FixtureRequest, server: Server) -> AsyncIterator[Judge]:
    if request.param == "sync":
        with sdk.CaiJudge(base_url=server.url, api_key=USER_KEY) as client:
            yield Judge("sync", client)
    else:
        async with sdk.AsyncCaiJudge(base_url=server.url, api_key=USER_KEY) as aclient:
            yield Judge("async", aclient)


async def test_label_returns_one_result_per_pair_in_order(judge: Judge) -> None:
    pairs = [pair(1), bad_pair(2), pair(3)]
    answer = await judge("label", pairs, constitution="harmless", principles=2, seed=3)
    assert isinstance(answer, sdk.LabelResponse)
    assert [r.id for r in answer.labels] == ["p1", "p2", "p3"]
    first, error, third = answer.labels
    assert isinstance(first, sdk.Label) and isinstance(third, sdk.Label)
    assert first.selection == 2 and len(first.principles) == 2 and first.seed == 3
    assert first.constitution.id == "harmless" and first.preferred in ("a", "b", "tie")
    assert isinstance(error, sdk.PairError)
    assert error.index == 1 and error.error.param == "pairs.1.response_b"
    assert answer.usage.pairs == 2 and answer.usage.score_units == 8


async def test_resource_calls_answer_as_the_first_release_names(judge: Judge) -> None:
    pairs = [pair(1), bad_pair(2)]
    by_resource = await judge("labels.create", pairs, constitution="harmless", principles=1)
    by_name = await judge("label", pairs, constitution="harmless", principles=1)
    assert as_lines(by_resource.labels) == as_lines(by_name.labels)
    assert [r.id for r in by_resource.labels] == ["p1", "p2"]
    found = await judge("constitutions.retrieve", "harmless")
    assert found == await judge("get_constitution", "harmless")
    listed = await judge("constitutions.list")
    assert any(c.id == "harmless" for c in listed)
    jobs = await judge("jobs.list", limit=5)
    assert isinstance(jobs, sdk.JobList)


async def test_errors_are_typed_and_carry_the_request_id_and_body(
    judge: Judge, server: Server
) -> None:
    with pytest.raises(sdk.NotFoundError) as missing:
        await judge("label", [pair(1)], constitution="no-such-constitution")
    assert missing.value.status_code == 404 and missing.value.param == "constitution"
    assert missing.value.request_id and missing.value.request_id.startswith("req_")
    assert isinstance(missing.value.body, dict) and "error" in missing.value.body

    with pytest.raises(sdk.UnprocessableEntityError) as invalid:
        await judge("label", [pair(1)], constitution="harmless", principles=0)
    assert invalid.value.param == "principles" and invalid.value.type == "invalid_request"

    wrong = sdk.CaiJudge if judge.kind == "sync" else sdk.AsyncCaiJudge
    stranger = Judge(judge.kind, wrong(base_url=server.url, api_key="wrong-key"))
    with pytest.raises(sdk.AuthenticationError):
        await stranger("list_constitutions")
    await stranger("close")


async def test_label_dataset_keeps_input_order_and_collects_errors(judge: Judge) -> None:
    pairs = [bad_pair(i) if i in (5, 17) else pair(i) for i in range(40)]
    summary = await judge(
        "label_dataset", iter(pairs), constitution="harmless", principles=1,
        chunk_size=6, concurrency=3, progress=False,
    )  # fmt: skip
    assert summary.results is not None
    assert [r.id for r in summary.results] == [p["id"] for p in pairs]
    assert summary.labeled == 38 and summary.failed == 2
    assert [e.index for e in summary.errors] == [5, 17]
    assert summary.usage.pairs == 38


async def test_iter_label_dataset_streams_in_order(judge: Judge) -> None:
    pairs = [pair(i) for i in range(13)]
    results = await judge.collect(
        "iter_label_dataset", pairs, constitution="harmless", principles=1,
        chunk_size=4, concurrency=2, progress=False,
    )  # fmt: skip
    assert [r.id for r in results] == [p["id"] for p in pairs]
    assert all(isinstance(r, sdk.Label) for r in results)


async def test_label_dataset_resumes_from_its_output_file(
    judge: Judge, server: Server, tmp_path: Path
) -> None:
    pairs = [{**pair(i), "id": f"{judge.kind}-r{i}"} for i in range(30)]
    output = tmp_path / "labels.jsonl"
    first = await judge(
        "label_dataset", pairs[:20], constitution="harmless", principles=1, output=output,
        chunk_size=8, progress=False,
    )  # fmt: skip
    assert first.labeled == 20 and first.results is None
    with output.open("a") as sink:
        sink.write('{"id": "half-written')  # a run killed mid-line
    pairs_before = pairs_total(server)
    second = await judge(
        "label_dataset", pairs, constitution="harmless", principles=1, output=output,
        chunk_size=8, progress=False,
    )  # fmt: skip
    assert (second.resumed, second.labeled, second.failed) == (20, 10, 0)
    assert pairs_total(server) - pairs_before == 10
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["id"] for line in lines] == [p["id"] for p in pairs]

    with pytest.raises(ValueError, match="principles"):
        await judge("label_dataset", pairs, constitution="harmless", principles=2, output=output)
    with pytest.raises(ValueError, match="other input"):
        await judge(
            "label_dataset", pairs[1:], constitution="harmless", principles=1, output=output
        )


async def test_constitutions_list_get_and_create(judge: Judge, server: Server) -> None:
    listed = await judge("list_constitutions")
    harmless = next(c for c in listed if c.id == "harmless")
    detail = await judge("get_constitution", "harmless")
    assert detail.version == harmless.latest_version
    assert len(detail.principles) == harmless.principles
    pinned = await judge("get_constitution", f"harmless@{detail.version[:12]}")
    assert pinned.version == detail.version

    spec = sdk.ConstitutionSpec(
        id=f"sdk-{judge.kind}-{uuid.uuid4().hex[:8]}",
        description="Politeness only.",
        principles=[sdk.Principle(id="polite", question="Which response is more polite?")],
    )
    with pytest.raises(sdk.PermissionDeniedError):
        await judge("create_constitution", spec)
    admin = judge.client.with_options(api_key=ADMIN_KEY)
    created = await Judge(judge.kind, admin)("create_constitution", spec)
    assert created.id == spec.id and len(created.version) == 64
    assert (await judge("get_constitution", spec.id)).version == created.version
    # A reserved id is a permanent conflict: raised at once, not retried.
    reserved = {**spec.model_dump(), "id": "harmless"}
    with pytest.raises(sdk.ConflictError) as conflict:
        await Judge(judge.kind, admin)("create_constitution", reserved)
    assert conflict.value.status_code == 409


async def test_configuration_from_the_environment_and_with_options(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAI_JUDGE_BASE_URL", server.url)
    monkeypatch.setenv("CAI_JUDGE_API_KEY", USER_KEY)
    with sdk.CaiJudge() as client:
        assert client.base_url == server.url
        assert any(c.id == "harmless" for c in client.list_constitutions())
        quiet = client.with_options(max_retries=0, timeout=30.0)
        assert quiet.retry_policy.max_retries == 0 and quiet._http is client._http
        assert quiet.label([pair(1)], constitution="harmless", principles=1).usage.pairs == 1
    async with sdk.AsyncCaiJudge() as aclient:
        assert any(c.id == "harmless" for c in await aclient.list_constitutions())


async def test_groupwise_reward_ranks_each_group_against_itself(server: Server) -> None:
    """The deprecated shim over the TRL adapter's group path: groups are consecutive runs
    of one prompt, judged through /v1/rewards."""
    client = sdk.AsyncCaiJudge(base_url=server.url, api_key=USER_KEY)
    with pytest.warns(DeprecationWarning, match="group_reward_func"):
        reward = sdk.groupwise_reward(client, constitution="harmless", principles=1, concurrency=4)
    chat = [{"role": "user", "content": "My neighbour is noisy. What should I do?"}]
    prompts = ["How do I calm down after an argument?"] * 4 + [chat] * 3 + ["Alone?"]
    completions = [
        "Breathe slowly and take a walk.", "Punch a wall.", "Talk it out later.", "Scream.",
        [{"role": "assistant", "content": "Talk to them kindly."}],
        [{"role": "assistant", "content": "Call the police at once."}],
        [{"role": "assistant", "content": "Play louder music back."}],
        "Just one completion here.",
    ]  # fmt: skip
    assert asyncio.iscoroutinefunction(reward) and reward.__name__ == "cai_judge_harmless"
    rewards = await reward(prompts=prompts, completions=completions, completion_ids=None)
    assert len(rewards) == 8 and all(0.0 <= r <= 1.0 for r in rewards)
    # Win probabilities of a pair add to 1, so a group of G has rewards summing to G/2.
    assert sum(rewards[:4]) == pytest.approx(2.0, abs=1e-6)
    assert sum(rewards[4:7]) == pytest.approx(1.5, abs=1e-6)
    stats = reward.stats  # type: ignore[attr-defined]
    # The lone completion is the one fallback: nothing to judge it against.
    assert rewards[7] == 0.5 and (stats.fallbacks, stats.errors, stats.judged) == (1, 0, 7)
    assert len(set(rewards[:4])) > 1  # the judge does tell completions apart

    # A judge slower than the timeout: every group falls back, and the call returns in time.
    with pytest.warns(DeprecationWarning):
        hasty = sdk.groupwise_reward(client, constitution="harmless", timeout=0.01, fallback=-1.0)
    started = asyncio.get_running_loop().time()
    assert await hasty(prompts[:4], completions[:4]) == [-1.0] * 4
    assert asyncio.get_running_loop().time() - started < 2.0
    assert hasty.stats.timeouts == 4  # type: ignore[attr-defined]
    await client.close()


async def test_reward_dataset_from_live_labels(judge: Judge, tmp_path: Path) -> None:
    pairs = [pair(i) for i in range(8)] + [
        {"id": "chat", "prompt": [{"role": "user", "content": "Hi?"}],
         "response_a": "Hello, how can I help?", "response_b": "Go away."},
    ]  # fmt: skip
    labels = (await judge("label", pairs, constitution="harmless", principles=2)).labels
    by_id = {label.id: label for label in labels}
    summary = sdk.to_reward_dataset(labels, pairs, tmp_path / "rm.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "rm.jsonl").read_text().splitlines()]
    assert summary.rows == len(rows) == 9 - summary.ties
    for row in rows:
        label, source = by_id[row["id"]], next(p for p in pairs if p["id"] == row["id"])
        chosen = row["chosen"][0]["content"]
        winner = source["response_a"] if label.preferred == "a" else source["response_b"]
        assert chosen == winner
        assert row["margin"] == pytest.approx(abs(label.margin)) and row["margin"] >= 0
        assert row["p_chosen"] >= 0.5 and row["p_chosen"] == pytest.approx(
            label.p_a if label.preferred == "a" else 1 - label.p_a
        )
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    # One prompt form (string prompts become a user message): string and chat prompts
    # share one Parquet column.
    written = sdk.to_reward_dataset(labels, pairs, tmp_path / "rm.parquet")
    table = pq.read_table(tmp_path / "rm.parquet")
    assert table.column_names == ["id", "prompt", "chosen", "rejected", "margin", "p_chosen"]
    assert table.num_rows == written.rows == summary.rows
    assert table.column("p_chosen").to_pylist() == [row["p_chosen"] for row in rows]
    assert table.column("prompt").to_pylist() == [row["prompt"] for row in rows]


def test_sdk_installs_alone_and_labels_from_a_fresh_venv(server: Server, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(ROOT / "clients" / "python")],
        check=True, timeout=600,
    )  # fmt: skip
    script = textwrap.dedent(
        f"""
        import importlib.util, json
        for absent in ("torch", "vllm", "cai_judge", "transformers"):
            assert importlib.util.find_spec(absent) is None, absent
        from cai_judge_client import CaiJudge, to_reward_dataset
        pairs = {json.dumps([pair(1), pair(2)])}
        # The README's quick start, up to the trainer (TRL is not installed here).
        with CaiJudge(base_url={server.url!r}, api_key={USER_KEY!r}) as judge:
            done = judge.label_dataset(pairs, constitution="harmless", principles=1,
                                       output={str(tmp_path / "labels.jsonl")!r})
        assert done.labeled == 2, done
        rows = to_reward_dataset({str(tmp_path / "labels.jsonl")!r}, pairs,
                                 {str(tmp_path / "rm.jsonl")!r})
        print(rows.rows + rows.ties)
        """
    )
    done = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"


# ---- labeling options added after the SDK's first release: CoT and calibration ----------


async def test_cot_mode_returns_clamped_numbers_raw_ones_and_rationales(judge: Judge) -> None:
    answer = await judge(
        "label", [pair(1)], constitution="harmless", principles=1, per_principle=True,
        mode="cot", cot_max_tokens=4,
    )  # fmt: skip
    label = answer.labels[0]
    assert isinstance(label, sdk.Label)
    assert label.mode == "cot" and label.cot_max_tokens == 4
    assert label.raw_p_a is not None and label.raw_margin is not None
    ceiling = label.cot_max_probability
    assert ceiling is not None and 0.5 < ceiling < 1.0
    # Each order's log-odds is clamped to ±logit(ceiling), which only pulls towards 0.
    bound = math.log(ceiling / (1 - ceiling))
    assert abs(label.margin) <= min(bound, abs(label.raw_margin)) + 1e-9
    (breakdown,) = label.per_principle or []
    assert breakdown.raw_s_ab is not None and breakdown.raw_s_ba is not None
    assert abs(breakdown.s_ab) <= bound + 1e-9 and abs(breakdown.s_ba) <= bound + 1e-9
    assert [r.principle for r in label.rationales or []] == label.principles
    plain = (await judge("label", [pair(1)], constitution="harmless", principles=1)).labels[0]
    assert plain.mode is None and plain.rationales is None and plain.raw_p_a is None


async def test_calibrated_needs_a_profile_on_the_server(judge: Judge) -> None:
    # This server has no CAI_JUDGE_CALIBRATION_DIR: the option reaches it, and it says so.
    with pytest.raises(sdk.UnprocessableEntityError) as refused:
        await judge("label", [pair(1)], constitution="harmless", principles=1, calibrated=True)
    assert (refused.value.type, refused.value.param) == ("calibration_unavailable", "calibrated")
    with pytest.raises(sdk.UnprocessableEntityError):
        await judge(
            "label_dataset", [pair(1)], constitution="harmless", principles=1, calibrated=True,
            progress=False,
        )  # fmt: skip


async def test_label_dataset_in_cot_mode_resumes_only_in_cot_mode(
    judge: Judge, tmp_path: Path
) -> None:
    pairs = [pair(i) for i in range(3)]
    output = tmp_path / "cot.jsonl"
    options: dict[str, Any] = {"constitution": "harmless", "principles": 1, "progress": False}
    done = await judge("label_dataset", pairs[:2], output=output, mode="cot",
                       cot_max_tokens=2, **options)  # fmt: skip
    assert done.labeled == 2
    assert [json.loads(line)["mode"] for line in output.read_text().splitlines()] == ["cot"] * 2
    with pytest.raises(ValueError, match="mode"):
        await judge("label_dataset", pairs, output=output, **options)
    resumed = await judge("label_dataset", pairs, output=output, mode="cot",
                          cot_max_tokens=2, **options)  # fmt: skip
    assert (resumed.resumed, resumed.labeled) == (2, 1)


# ---- batch jobs, on the module's redis-server --------------------------------------------


def job_pair(tag: str, i: int) -> dict[str, Any]:
    """A pair no other test labeled: the label cache cannot answer it, so a job takes time."""
    return {**pair(i), "id": f"{tag}-{i}", "prompt": f"[{tag}] " + pair(i)["prompt"]}


def as_lines(results: list[Any]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json", exclude_none=True) for r in results]


async def test_a_job_from_an_iterable_labels_like_label_in_input_order(judge: Judge) -> None:
    tag = f"it-{judge.kind}-{uuid.uuid4().hex[:8]}"
    pairs = [job_pair(tag, i) for i in range(7)]
    pairs[4] = {**pairs[4], "response_b": ""}
    key = f"sdk-{tag}"
    submitted = await judge(
        "submit_job", iter(pairs), constitution="harmless", principles=1, seed=3,
        idempotency_key=key,
    )  # fmt: skip
    assert isinstance(submitted, sdk.Job) and submitted.total == 7
    assert submitted.constitution.id == "harmless"
    # The same key and body is the same job; the same key with another body is refused.
    again = await judge(
        "submit_job", pairs, constitution="harmless", principles=1, seed=3, idempotency_key=key
    )
    assert again.id == submitted.id
    with pytest.raises(sdk.UnprocessableEntityError) as reused:
        await judge("submit_job", pairs[:3], constitution="harmless", idempotency_key=key)
    assert reused.value.type == "idempotency_key_reused" and reused.value.status_code == 422

    job = await judge("wait_job", submitted.id, poll_interval=0.2, timeout=240, progress=False)
    assert (job.state, job.done, job.failed) == ("succeeded_with_errors", 6, 1)
    results = await judge.collect("iter_job_results", job.id, page_size=2)
    assert [r.id for r in results] == [p["id"] for p in pairs]
    error = results[4]
    assert isinstance(error, sdk.PairError) and error.index == 4
    assert error.error.param == "pairs.4.response_b"
    labels = [r for r in results if isinstance(r, sdk.Label)]
    assert all((label.seed, label.selection) == (3, 1) for label in labels)
    # A job's lines are exactly what /v1/labels answers for the same pairs and options.
    direct = await judge("label", pairs, constitution="harmless", principles=1, seed=3)
    for from_job, from_labels in zip(as_lines(results), as_lines(direct.labels), strict=True):
        if "error" in from_job:
            assert from_job["error"]["type"] == from_labels["error"]["type"]
            continue
        assert from_job["p_a"] == pytest.approx(from_labels["p_a"], abs=1e-6)
        assert from_job["principles"] == from_labels["principles"]
    # From a cursor: the rest, still in order.
    tail = await judge.collect("iter_job_results", job.id, cursor=5, page_size=1)
    assert [r.id for r in tail] == [p["id"] for p in pairs[5:]]


async def test_a_job_from_a_file_streams_results_while_it_runs(
    judge: Judge, tmp_path: Path
) -> None:
    tag = f"file-{judge.kind}-{uuid.uuid4().hex[:8]}"
    pairs = [job_pair(tag, i) for i in range(10)]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    submitted = await judge(
        "submit_job", source, constitution="harmless", principles=2, aggregator="mean_prob",
        per_principle=True,
    )  # fmt: skip
    assert submitted.total == 10
    # Read at once, without waiting for the job: pages hold only the finished prefix, and
    # the iterator polls until the last pair is in.
    results = await judge.collect("iter_job_results", submitted.id, page_size=3, poll_interval=0.1)
    assert [r.id for r in results] == [p["id"] for p in pairs]
    for label in results:
        assert isinstance(label, sdk.Label)
        assert (label.selection, label.aggregator, len(label.per_principle or [])) == (
            2, "mean_prob", 2,
        )  # fmt: skip
    finished = await judge("get_job", submitted.id)
    assert (finished.state, finished.done, finished.failed) == ("succeeded", 10, 0)
    assert finished.pairs_per_s > 0
    listed = await judge("list_jobs", limit=100)
    assert isinstance(listed, sdk.JobList)
    assert finished.id in [j.id for j in listed.jobs]
    with pytest.raises(FileNotFoundError):
        await judge("submit_job", tmp_path / "missing.jsonl", constitution="harmless")


async def test_get_cancel_and_unknown_jobs(judge: Judge) -> None:
    tag = f"cancel-{judge.kind}-{uuid.uuid4().hex[:8]}"
    pairs = [job_pair(tag, i) for i in range(200)]
    submitted = await judge("submit_job", pairs, constitution="harmless", principles=2)
    cancelled = await judge("cancel_job", submitted.id)
    assert cancelled.state == "cancelled" and cancelled.finished and cancelled.total == 200
    status = await judge("get_job", submitted.id)
    assert status.state == "cancelled" and status.done + status.failed < 200
    assert (await judge("cancel_job", submitted.id)).state == "cancelled"
    # A cancelled job's results stop where it stopped: a prefix, and the iterator ends.
    results = await asyncio.wait_for(
        judge.collect("iter_job_results", submitted.id, page_size=50, poll_interval=0.1),
        timeout=60,
    )
    assert len(results) < 200
    assert [r.id for r in results] == [p["id"] for p in pairs[: len(results)]]
    # wait_job returns a finished job at once.
    assert (await judge("wait_job", submitted.id, poll_interval=5, progress=False)).state == (
        "cancelled"
    )
    for method in ("get_job", "cancel_job"):
        with pytest.raises(sdk.NotFoundError) as missing:
            await judge(method, "no-such-job")
        assert missing.value.status_code == 404 and missing.value.request_id
    with pytest.raises(sdk.NotFoundError):
        await judge.collect("iter_job_results", "no-such-job")


async def test_a_job_in_cot_mode(judge: Judge) -> None:
    tag = f"cot-{judge.kind}-{uuid.uuid4().hex[:8]}"
    submitted = await judge(
        "submit_job", [job_pair(tag, 0)], constitution="harmless", principles=1, mode="cot",
        cot_max_tokens=2,
    )  # fmt: skip
    results = await judge.collect("iter_job_results", submitted.id, poll_interval=0.1)
    # A job takes every /v1/labels option: its labels are CoT labels, rationales included.
    assert [r.mode for r in results] == ["cot"]
    assert results[0].rationales and results[0].raw_margin is not None
