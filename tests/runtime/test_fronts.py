"""The fronts on the fake engine, each alone under `Runtime.serving()`: the HTTP front
serves the runtime's Services and fails its start on a taken port (no `sys.exit` from
uvicorn inside the event loop), the metrics port likewise, and the job consumer gives a
chunk back when its process stops rather than waiting out the drain."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cai_judge.api.server import HttpFront
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.runtime import Front, FrontError, JobConsumerFront, MetricsFront, Runtime
from cai_judge.services.errors import Unavailable
from cai_judge.services.job_consumer import ChunkRetry, JobConsumer
from cai_judge.settings import Settings
from cai_judge.testing.ports import free_port
from tests.support.fake_engine import FakeEngine


def runtime(fronts: list[Front], **settings: Any) -> Runtime:
    return Runtime(
        Settings(max_model_len=1024, host="127.0.0.1", **settings),
        fronts,
        engine=FakeEngine(max_model_len=1024),
        registry=ConstitutionRegistry.with_builtins(),
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def test_the_http_front_serves_the_runtimes_services_until_stopped():
    port = free_port()
    front = HttpFront()
    async with (
        runtime([front], port=port).serving() as services,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        assert (await http.get("/health/ready")).status_code == 200
        services.admission.start_draining()
        assert (await http.get("/health/ready")).status_code == 503
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2)


async def test_the_http_front_on_a_taken_port_fails_its_start(taken_port: int):
    with pytest.raises(FrontError, match=f"127.0.0.1:{taken_port}.*CAI_JUDGE_PORT"):
        async with runtime([HttpFront()], port=taken_port).serving():
            pytest.fail("served on a taken port")


async def test_the_metrics_front_on_a_taken_port_fails_its_start(taken_port: int):
    front = MetricsFront(taken_port, "127.0.0.1")
    with pytest.raises(FrontError, match=f"cannot serve metrics on port {taken_port}"):
        async with runtime([front]).serving():
            pytest.fail("served on a taken port")


async def test_the_metrics_front_serves_the_services_registry():
    port = free_port()
    async with runtime([MetricsFront(port, "127.0.0.1")]).serving():
        async with httpx.AsyncClient() as http:
            scrape = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert "cai_judge_queue_depth" in scrape.text


async def test_a_workers_consumer_needs_redis_and_a_replicas_runs_only_with_it():
    with pytest.raises(FrontError, match="CAI_JUDGE_REDIS_URL"):
        async with runtime([JobConsumerFront(worker=True)]).serving():
            pytest.fail("a worker ran with no Redis")
    replica = JobConsumerFront()
    async with runtime([replica]).serving():
        assert replica.consumer is None and replica.in_flight == 0


class RefusingLabeler:
    def __init__(self, error: Unavailable) -> None:
        self.error = error

    async def label(self, record: Any, todo: Any) -> Any:
        raise self.error


@pytest.mark.parametrize("refusal", ["draining", "shutdown"])
async def test_a_consumer_of_a_stopping_process_leaves_its_chunk_to_another(refusal: str):
    """Before, a chunk refused because its own process drained waited here (retrying
    each `retry_after_s`) until the drain's deadline; now it is left pending at once."""
    consumer = JobConsumer(
        None,  # type: ignore[arg-type]
        RefusingLabeler(Unavailable("the server is draining", type=refusal, retry_after_s=1)),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Settings(),
        name="c",
    )
    record = type("Record", (), {"id": "j1"})()
    with pytest.raises(ChunkRetry, match="left to another consumer"):
        await asyncio.wait_for(consumer._label(record, [(0, b"{}")]), 5)  # type: ignore[arg-type]
