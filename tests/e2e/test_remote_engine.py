"""The remote engine (DESIGN.md §4): prefix-affinity routing over real `vllm serve` processes.

The router's arithmetic is checked on its own in tests/engine/test_routing.py (pure, fast).
This module runs against two real vLLM CPU servers on loopback with the tiny model, started
once for the module (a cold start takes 60-90 s), and compares with the session's in-process
engine: labels equal to 1e-4, every unit of a prefix on one server (read from the servers'
own /metrics), a server killed mid-run losing nothing, and a fleet that is down answering
503 and unready fast.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from cai_judge.api.app import create_app
from cai_judge.engine.base import EngineUnavailable, GenerationParams
from cai_judge.engine.identity import EngineIdentity
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.engine.vllm_remote import FleetMismatch, RemoteEngineConfig, RemoteVllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import Label, LabelOptions, Pair
from cai_judge.settings import Settings
from cai_judge.testing.ports import free_port
from cai_judge.testing.vllm_server import VllmServer, launch, wait_ready

# -- real vLLM servers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[VllmServer]]:
    logs = tmp_path_factory.mktemp("vllm-servers")
    started = [launch(tiny_model_dir, logs / f"vllm-{i}.log", core=i) for i in range(2)]
    wait_ready(started)
    yield started
    for server in started:
        server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def remote(
    servers: list[VllmServer], tiny_model_dir: Path
) -> AsyncIterator[RemoteVllmEngine]:
    engine = await RemoteVllmEngine.start(
        RemoteEngineConfig(
            urls=tuple(s.url for s in servers),
            model=str(tiny_model_dir),
            max_model_len=1024,
            health_interval_s=0.5,
        )
    )
    yield engine
    await engine.shutdown()


def make_pairs(count: int, offset: int = 0) -> list[Pair]:
    return [
        Pair(
            id=f"p{i}",
            prompt=f"Question number {i}: how should I answer the user?",
            response_a=f"Answer {i}: " + "carefully and kindly " * (3 + i % 4),
            response_b=f"Reply {i}: " + "quickly " * (5 + i % 3),
        )
        for i in range(offset, offset + count)
    ]


async def label(engine: object, pairs: list[Pair], principles: int = 4) -> list[Label]:
    judge = Judge(engine, ConstitutionRegistry.with_builtins())  # type: ignore[arg-type]
    try:
        batch = await judge.label(pairs, "harmless", LabelOptions(principles=principles))
    finally:
        judge.close()
    assert not batch.errors, batch.errors
    return batch.labels


def assert_same_labels(remote: list[Label], local: list[Label]) -> None:
    assert [r.id for r in remote] == [r.id for r in local]
    for got, want in zip(remote, local, strict=True):
        assert got.principles == want.principles
        assert math.isclose(got.margin, want.margin, abs_tol=1e-4), got.id
        assert math.isclose(got.p_a, want.p_a, abs_tol=1e-4), got.id
        assert math.isclose(got.answer_mass, want.answer_mass, abs_tol=1e-4), got.id
        assert math.isclose(got.position_bias, want.position_bias, abs_tol=1e-4), got.id


@pytest.mark.engine
async def test_labels_equal_the_in_process_engine(
    remote: RemoteVllmEngine, tiny_engine: VllmEngine
):
    pairs = make_pairs(6)
    assert_same_labels(await label(remote, pairs), await label(tiny_engine, pairs))


@pytest.mark.engine
async def test_a_fleet_serving_different_models_is_refused(
    remote: RemoteVllmEngine, servers: list[VllmServer], tiny_model_dir: Path, tmp_path: Path
):
    """Only tokenizers were once compared, so servers serving different models (or
    names, or contexts) under one fleet were mixed, and labels depended on routing."""
    # The module's fleet agrees; it reports what it serves (its dtype only in dev mode).
    assert remote.identity == EngineIdentity(str(tiny_model_dir), str(tiny_model_dir), "unreported")
    odd = launch(
        tiny_model_dir,
        tmp_path / "odd.log",
        core=1,
        extra_args=["--served-model-name", "tiny-odd"],
        env={"VLLM_SERVER_DEV_MODE": "1"},  # opens /server_info, which reports the dtype
    )
    try:
        await asyncio.to_thread(wait_ready, [odd])
        config = RemoteEngineConfig(urls=(odd.url,), model=str(tiny_model_dir), max_model_len=1024)
        alone = await RemoteVllmEngine.start(config)
        await alone.shutdown()
        assert alone.identity == EngineIdentity("tiny-odd", str(tiny_model_dir), "float32")
        with pytest.raises(FleetMismatch) as refused:
            await RemoteVllmEngine.start(replace(config, urls=(servers[0].url, odd.url)))
        message = str(refused.value)
        assert f"{odd.url} serves model 'tiny-odd'" in message
        assert f"{servers[0].url} serves model {str(tiny_model_dir)!r}" in message
        assert "--served-model-name" in message
    finally:
        odd.stop()


@pytest.mark.engine
async def test_generation_equals_the_in_process_engine(
    remote: RemoteVllmEngine, tiny_engine: VllmEngine
):
    """CoT and SL-CAI generate over /v1/completions too: greedy text as in process."""
    prompts = ["The quick brown fox", "Which response is less harmful?"]
    params = GenerationParams(max_tokens=8)
    assert await remote.generate(prompts, params) == await tiny_engine.generate(prompts, params)


@pytest.mark.engine
async def test_every_unit_of_a_pair_lands_on_one_server(
    remote: RemoteVllmEngine, servers: list[VllmServer]
):
    """One pair at a time with K=4: two prefixes (one per order) of four units each, routed
    on what both orders share, so one server's own request counter grows by all 8 and the
    other's by none; and the followers of each prefix find it in that server's cache.

    The ring hashes the servers' URLs, whose ports are random, so which server owns which
    pair changes from run to run: pairs are labeled until both servers have owned one (at
    least 4, at most 32). A fixed 8 left both servers' turn to chance: one CI run sent all 8
    to one server. Past 32 pairs, routing that never uses the second server is a bug."""
    used: set[str] = set()
    for done, pair in enumerate(make_pairs(32, offset=100), start=1):
        if done > 4 and len(used) == 2:
            break
        before = [s.metric("vllm:request_success_total") for s in servers]
        hits_before = sum(s.metric("vllm:prefix_cache_hits_total") for s in servers)
        routed_before = dict(remote.units_by_server)
        await label(remote, [pair])
        after = [s.metric("vllm:request_success_total") for s in servers]
        grew = [a - b for a, b in zip(after, before, strict=True)]
        assert sorted(grew) == [0, 8], grew
        # The router's own count agrees with the servers'.
        for server, delta in zip(servers, grew, strict=True):
            assert remote.units_by_server[server.url] - routed_before.get(server.url, 0) == delta
        used |= {s.url for s, d in zip(servers, grew, strict=True) if d}
        hits = sum(s.metric("vllm:prefix_cache_hits_total") for s in servers) - hits_before
        assert hits > 0
    assert len(used) == 2  # the fleet is used, not one server


@pytest.mark.engine
async def test_a_server_killed_mid_run_loses_nothing(
    remote: RemoteVllmEngine, servers: list[VllmServer], tiny_engine: VllmEngine
):
    """SIGKILL one server while a batch is in flight: its units are retried on the other,
    every pair gets its label, equal to the in-process engine's. Last test on `servers`:
    the killed server stays dead for the rest of the module."""
    pairs = make_pairs(24, offset=200)
    victim, survivor = servers
    scored_before = sum(remote.units_by_server.values())
    running = asyncio.create_task(label(remote, pairs))
    deadline = time.monotonic() + 60
    while remote.units_by_server[victim.url] < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not running.done(), "the batch finished before the kill: make it larger"
    victim.kill()
    labels = await asyncio.wait_for(running, timeout=300)
    assert len(labels) == len(pairs)
    assert_same_labels(labels, await label(tiny_engine, pairs))
    assert not remote.router.is_healthy(victim.url)
    # Every unit (24 pairs × 4 principles × 2 orders) was scored exactly once, on one
    # server or the other; what the victim lost went to the survivor.
    assert sum(remote.units_by_server.values()) - scored_before == 24 * 4 * 2
    assert remote.units_by_server[survivor.url] > 0


@pytest.mark.engine
# Its own event loop: in one full-suite run it hung for the whole 900 s timeout while it
# passed alone and with its module (the session loop carries every earlier test's leftover
# tasks); `asyncio.timeout` below turns any hang into a failure that says where it was.
@pytest.mark.asyncio(loop_scope="function")
async def test_fleet_down_answers_503_and_unready_at_once(tiny_model_dir: Path):
    """No server listening: readiness false within its timeout, labels 503 with
    Retry-After, and the process is not told to exit (the fleet is not ours to restart)."""
    async with asyncio.timeout(120):
        await _fleet_down_answers_503_and_unready_at_once(tiny_model_dir)


async def _fleet_down_answers_503_and_unready_at_once(tiny_model_dir: Path) -> None:
    closed = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    exits: list[bool] = []
    settings = Settings(
        engine="remote",
        vllm_urls=closed,
        model=str(tiny_model_dir),
        max_model_len=1024,
        engine_health_interval_s=0.1,
        ready_timeout_s=2.0,
    )
    app = create_app(settings, on_engine_dead=lambda: exits.append(True))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            started = time.monotonic()
            ready = await http.get("/health/ready")
            assert time.monotonic() - started < settings.ready_timeout_s + 1
            assert ready.status_code == 503
            assert "unavailable" in ready.json()["checks"]["engine"]

            started = time.monotonic()
            response = await http.post(
                "/v1/labels",
                json={"constitution": "harmless", "pairs": [make_pairs(1)[0].model_dump()]},
            )
            assert time.monotonic() - started < 10
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
            assert response.json()["error"]["type"] == "engine_unavailable"
            await asyncio.sleep(0.5)  # several watchdog rounds
    assert not exits


async def test_fleet_down_fails_the_engine_call_not_hangs(tiny_model_dir: Path):
    engine = await RemoteVllmEngine.start(
        RemoteEngineConfig(urls=(f"http://127.0.0.1:{free_port()}",), model=str(tiny_model_dir))
    )
    try:
        with pytest.raises(EngineUnavailable, match="no vLLM server is reachable"):
            await asyncio.wait_for(engine.check_health(), 3)
        judge = Judge(engine, ConstitutionRegistry.with_builtins())
        try:
            with pytest.raises(EngineUnavailable):
                await asyncio.wait_for(judge.label(make_pairs(1), "harmless"), 10)
        finally:
            judge.close()
    finally:
        await engine.shutdown()


async def test_dns_discovery_routes_to_every_address_of_a_name(tiny_model_dir: Path):
    """A headless Service's name resolves to each pod: the fleet is every address."""
    port = free_port()
    engine = await RemoteVllmEngine.start(
        RemoteEngineConfig(
            urls=(f"http://localhost:{port}",), model=str(tiny_model_dir), dns_discovery=True
        )
    )
    try:
        assert f"http://127.0.0.1:{port}" in engine.router.servers
        assert all(not s.startswith("http://localhost") for s in engine.router.servers)
        assert not engine.router.healthy_servers  # nothing listens there
    finally:
        await engine.shutdown()


async def test_both_orders_of_a_pair_route_together(tiny_model_dir: Path):
    """The Judge tells the engine what a pair's orders share: one routing key per pair,
    the same for pairs on one conversation, another for another conversation."""
    engine = await RemoteVllmEngine.start(
        RemoteEngineConfig(urls=(f"http://127.0.0.1:{free_port()}",), model=str(tiny_model_dir))
    )
    judge = Judge(engine, ConstitutionRegistry.with_builtins())
    try:
        first, second = make_pairs(2)
        same_prompt = first.model_copy(update={"id": "q", "response_b": "Something else."})
        plan = await judge.plan([first, second, same_prompt], "harmless", LabelOptions())
    finally:
        judge.close()
        await engine.shutdown()
    keys_by_pair = [
        {plan.units[i].affinity_key for both in planned.unit_indices for i in both}
        for planned in plan.planned
    ]
    assert [len(k) for k in keys_by_pair] == [1, 1, 1]
    assert keys_by_pair[0] == keys_by_pair[2] != keys_by_pair[1]
    for unit in plan.units:
        assert unit.prefix_key[: len(unit.affinity_key)] == unit.affinity_key
        assert len(unit.affinity_key) < unit.prefix_length  # the orders differ after it


# -- a fleet answering 5xx: transient, never a permanent per-pair engine_error -------------


class _FailingFleetServer:
    """A stand-in vLLM server on 127.0.0.1 that is healthy and verifiable (it tokenizes with
    the judge's own tokenizer) but answers every completion with 503: what the remote
    engine does with a 5xx after its retries is the logic under test, not vLLM's."""

    def __init__(self, model_dir: Path) -> None:
        import threading

        import uvicorn
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        app = FastAPI()
        self.completions = 0

        @app.get("/health")
        def health() -> dict[str, str]:
            return {}

        @app.get("/v1/models")
        def models() -> dict[str, object]:
            return {"data": [{"id": str(model_dir), "root": str(model_dir), "max_model_len": 1024}]}

        @app.post("/tokenize")
        def tokenize(body: dict[str, object]) -> dict[str, object]:
            ids = tokenizer.encode(str(body["prompt"]), add_special_tokens=False)
            return {"tokens": ids}

        @app.post("/v1/completions")
        def completions() -> JSONResponse:
            self.completions += 1
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


async def test_a_fleet_answering_5xx_is_transient_not_an_engine_error(tiny_model_dir: Path):
    """A permanent `EngineError` here would become each pair's stored `engine_error` in a
    job, never labeled again; `EngineUnavailable` makes /v1/labels answer 503 and a job
    retry its chunk."""
    server = _FailingFleetServer(tiny_model_dir)
    try:
        engine = await RemoteVllmEngine.start(
            RemoteEngineConfig(
                urls=(server.url,), model=str(tiny_model_dir), max_model_len=1024, retries=1
            )
        )
        try:
            judge = Judge(engine, ConstitutionRegistry.with_builtins())
            try:
                with pytest.raises(EngineUnavailable, match=r"after 1 retries.*503"):
                    await asyncio.wait_for(
                        judge.label(make_pairs(1), "harmless", LabelOptions(principles=1)), 30
                    )
            finally:
                judge.close()
        finally:
            await engine.shutdown()
    finally:
        server.stop()
    assert server.completions >= 2  # the first try and its retry
