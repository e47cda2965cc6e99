"""A Redis that goes away mid-test (a real redis-server, stopped) surfaces as the store's one
error, StoreUnavailable naming the call, and reaches a client as 503 `store_unavailable`
with Retry-After: for a job call and a registry call alike, over HTTP; the gRPC mapping gives
UNAVAILABLE. The shared registry's blocking calls run off the event loop.

The app runs on the fake engine: what is under test is the store's failure path, and labels
against the built-ins only have to keep flowing while Redis is down."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import pytest_asyncio

from cai_judge.api.app import create_app
from cai_judge.grpc.errors import RETRY_AFTER_KEY, domain_to_grpc
from cai_judge.labeling.constitution import (
    ConstitutionRegistry,
    ConstitutionSpec,
    SharedConstitutionRegistry,
)
from cai_judge.services.constitutions import ConstitutionService
from cai_judge.services.security import Caller, hash_api_key
from cai_judge.settings import Settings
from cai_judge.store.constitutions import RedisConstitutionStore
from cai_judge.store.errors import StoreUnavailable
from cai_judge.store.jobs import RedisJobStore
from cai_judge.store.redis import connect
from cai_judge.testing.redis_server import RedisServer
from tests.support.fake_engine import FakeEngine

ADMIN = "admin-key"
PAIR = {"id": "p1", "prompt": "Hi?", "response_a": "Hello.", "response_b": "Go away."}
POLITE = {"id": "polite", "principles": [{"id": "p", "question": "Which is more polite?"}]}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, so stopping it touches no other test."""
    redis = RedisServer(tmp_path).start()
    yield redis
    redis.stop()


async def test_store_calls_raise_store_unavailable_naming_the_call(server: RedisServer):
    settings = Settings(redis_url=server.url)
    client = connect(settings)
    jobs = RedisJobStore(client, ttl_s=60)
    constitutions = RedisConstitutionStore.connect(server.url)
    assert await jobs.get("nope") is None  # up: a plain answer
    assert constitutions.ids() == set()
    server.stop()
    with pytest.raises(StoreUnavailable, match=r"RedisJobStore\.get") as caught:
        await jobs.get("nope")
    assert "ConnectionError" in str(caught.value)
    with pytest.raises(StoreUnavailable, match=r"RedisConstitutionStore\.add"):
        constitutions.add("polite", "0" * 64, "{}", reserve=False)
    await client.aclose()
    constitutions.close()


@pytest_asyncio.fixture
async def http(fake_engine: FakeEngine, server: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        max_model_len=1024, redis_url=server.url, jobs_consumer=False, retry_after_s=7,
        api_key_hashes=[hash_api_key(ADMIN)], admin_key_hashes=[hash_api_key(ADMIN)],
    )  # fmt: skip
    registry = SharedConstitutionRegistry.over(RedisConstitutionStore.connect(server.url))
    app = create_app(settings, engine=fake_engine, registry=registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as client:
            yield client
    registry.close()


def assert_store_unavailable(response: httpx.Response, call: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "store_unavailable"
    assert call in error["message"]  # names the store call that failed
    assert response.headers["Retry-After"] == "7"  # the service's setting


async def test_redis_stopped_mid_test_is_503_for_jobs_and_the_registry(
    http: httpx.AsyncClient, server: RedisServer
):
    submitted = await http.post("/v1/jobs", json={"constitution": "harmless", "pairs": [PAIR]})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert (await http.post("/v1/constitutions", json=POLITE)).status_code == 201
    server.stop()

    assert_store_unavailable(await http.get(f"/v1/jobs/{job_id}"), "RedisJobStore.get")
    assert_store_unavailable(await http.get("/v1/jobs"), "RedisJobStore.list_jobs")
    resubmit = await http.post("/v1/jobs", json={"constitution": "harmless", "pairs": [PAIR]})
    assert_store_unavailable(resubmit, "RedisJobStore.usage")
    newer = {**POLITE, "description": "while down"}
    assert_store_unavailable(
        await http.post("/v1/constitutions", json=newer), "RedisConstitutionStore.add"
    )
    # Reads fall back to what this replica has seen; built-in labels keep flowing.
    assert (await http.get("/v1/constitutions/polite")).status_code == 200
    labels = await http.post("/v1/labels", json={"constitution": "harmless", "pairs": [PAIR]})
    assert labels.status_code == 200, labels.text


def test_grpc_maps_store_unavailable_to_unavailable_with_retry():
    error = StoreUnavailable("RedisJobStore.get", ConnectionError("refused"))
    mapped = domain_to_grpc(error, retry_after_s=7)
    assert mapped is not None
    assert mapped.code == grpc.StatusCode.UNAVAILABLE
    assert "RedisJobStore.get" in mapped.details
    assert (RETRY_AFTER_KEY, "7") in mapped.trailing_metadata


async def test_registry_calls_run_off_the_event_loop():
    """A shared registry blocks on the network: the service must not call it on the loop."""
    threads: list[int] = []

    class Recording(ConstitutionRegistry):
        def resolve(self, ref: str) -> ConstitutionSpec:
            threads.append(threading.get_ident())
            return super().resolve(ref)

        def add(self, spec: ConstitutionSpec, *, reserve: bool = False) -> ConstitutionSpec:
            threads.append(threading.get_ident())
            return super().add(spec, reserve=reserve)

    service = ConstitutionService(Recording.with_builtins())
    threads.clear()  # loading the built-ins ran here, before any request
    caller = Caller(identity="admin", is_admin=True)
    await service.get("harmless")
    await service.list()
    await service.add(ConstitutionSpec.model_validate(POLITE), caller)
    assert threads and threading.get_ident() not in threads
