"""The constitution registry in Redis, shared by two app instances (two replicas): a
version added on one is served by the other at once; reserved ids and the admin key hold;
labels against built-ins keep working when Redis is down. The registry's reservations on
their own, with no app, are tests/store/test_constitution_store.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from cai_judge.api.app import create_app
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.labeling.constitution import SharedConstitutionRegistry
from cai_judge.services.security import hash_api_key
from cai_judge.settings import Settings
from cai_judge.store.constitutions import RedisConstitutionStore
from cai_judge.testing.redis_server import RedisServer

pytestmark = pytest.mark.engine

ADMIN, USER = "admin-key", "user-key"
PAIR = {"id": "p1", "prompt": "Hi?", "response_a": "Hello.", "response_b": "Go away."}
POLITE = {"id": "polite", "principles": [{"id": "p", "question": "Which is more polite?"}]}


@asynccontextmanager
async def replica(engine: VllmEngine, url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        max_model_len=1024, redis_url=url, jobs_consumer=False,
        api_key_hashes=[hash_api_key(USER)], admin_key_hashes=[hash_api_key(ADMIN)],
    )  # fmt: skip
    registry = SharedConstitutionRegistry.over(RedisConstitutionStore.connect(url))
    app = create_app(settings, engine=engine, registry=registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http
    registry.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_two_replicas_share_every_version(tiny_engine: VllmEngine, redis_url: str):
    async with replica(tiny_engine, redis_url) as one, replica(tiny_engine, redis_url) as two:
        assert (await two.get("/v1/constitutions/polite", headers=auth(USER))).status_code == 404
        refused = await one.post("/v1/constitutions", json=POLITE, headers=auth(USER))
        assert refused.status_code == 403

        created = await one.post("/v1/constitutions", json=POLITE, headers=auth(ADMIN))
        assert created.status_code == 201, created.text
        first = created.json()["version"]
        seen = await two.get("/v1/constitutions/polite", headers=auth(USER))
        assert seen.status_code == 200 and seen.json()["version"] == first

        # A second version added on replica two is the latest on replica one at once.
        newer = {**POLITE, "description": "v2"}
        second = (await two.post("/v1/constitutions", json=newer, headers=auth(ADMIN))).json()
        latest = (await one.get("/v1/constitutions/polite", headers=auth(USER))).json()
        assert latest["version"] == second["version"] != first
        listing = (await one.get("/v1/constitutions", headers=auth(USER))).json()
        polite = next(c for c in listing["constitutions"] if c["id"] == "polite")
        assert polite["versions"] == [first, second["version"]]

        labeled = await one.post(
            "/v1/labels",
            json={"constitution": f"polite@{first[:12]}", "pairs": [PAIR]},
            headers=auth(USER),
        )
        assert labeled.json()["labels"][0]["constitution"]["version"] == first

        hijack = {"id": "harmless", "principles": [{"id": "p", "question": "Which is shorter?"}]}
        response = await two.post("/v1/constitutions", json=hijack, headers=auth(ADMIN))
        assert response.status_code == 409 and response.json()["error"]["type"] == "reserved_id"


async def test_builtins_keep_serving_while_redis_is_down(tiny_engine: VllmEngine, tmp_path: Path):
    server = RedisServer(tmp_path).start()
    try:
        async with replica(tiny_engine, server.url) as http:
            created = await http.post("/v1/constitutions", json=POLITE, headers=auth(ADMIN))
            version = created.json()["version"]
            server.stop()
            for ref in ("harmless", f"polite@{version}", "polite"):
                response = await http.post(
                    "/v1/labels", json={"constitution": ref, "pairs": [PAIR]}, headers=auth(USER)
                )
                assert response.status_code == 200, response.text
            newer = {**POLITE, "description": "while down"}
            refused = await http.post("/v1/constitutions", json=newer, headers=auth(ADMIN))
            assert refused.status_code == 503
            assert refused.json()["error"]["type"] == "store_unavailable"
            assert "Retry-After" in refused.headers
    finally:
        server.stop()
