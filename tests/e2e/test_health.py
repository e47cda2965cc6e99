"""/health/ready as an open route (services/health.py, DESIGN.md §6): what it probes, how
often, and what it tells a caller who has no key.

On the real components: the remote engine against a fleet whose servers do not listen, and
the tiny in-process engine for a full queue.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from cai_judge.api.app import create_app
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.engine.vllm_remote import RemoteVllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from cai_judge.testing.ports import free_port

pytestmark = pytest.mark.engine

PAIR = {
    "id": "p1",
    "prompt": "How do I boil an egg?",
    "response_a": "Simmer it for nine minutes, then cool it in cold water.",
    "response_b": "I won't help with cooking.",
}


async def test_ready_probes_the_fleet_once_a_second_and_hides_its_addresses(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    ports = [free_port() for _ in range(2)]
    rounds: list[int] = []
    check_health = RemoteVllmEngine.check_health

    async def counted(self: RemoteVllmEngine) -> None:
        rounds.append(1)  # each is a round of requests to every server of the fleet
        await check_health(self)

    monkeypatch.setattr(RemoteVllmEngine, "check_health", counted)
    settings = Settings(
        engine="remote",
        vllm_urls=[f"http://127.0.0.1:{port}" for port in ports],
        model=str(tiny_model_dir),
        max_model_len=1024,
        # The watchdog's own rounds stay out of the count.
        engine_health_interval_s=3600,
        ready_cache_s=1.0,
    )
    app = create_app(settings, on_engine_dead=lambda: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            rounds.clear()  # whatever the engine's start did
            answers = await asyncio.gather(*(http.get("/health/ready") for _ in range(20)))
            answers += [await http.get("/health/ready") for _ in range(5)]
            assert len(rounds) == 1, "one probe of the fleet serves every caller within 1 s"
            await asyncio.sleep(settings.ready_cache_s + 0.2)
            answers.append(await http.get("/health/ready"))
            assert len(rounds) == 2, "a probe older than ready_cache_s is not reused"
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json()["checks"]["engine"] == "unavailable"
        # Nothing about the fleet's inside reaches a caller who needs no key.
        assert "127.0.0.1" not in answer.text
        assert not any(str(port) in answer.text for port in ports)


async def test_a_full_queue_keeps_the_pod_ready_and_refuses_with_retry_after(
    tiny_engine: VllmEngine,
):
    settings = Settings(max_model_len=1024, max_queued_units=40, retry_after_s=3)
    app = create_app(settings, engine=tiny_engine, registry=ConstitutionRegistry.with_builtins())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            admission = app.state.services.admission
            admission.queued_units = settings.max_queued_units  # other requests hold it all
            ready = await http.get("/health/ready")
            # Unready would take the pod out of the Service: clients would get connection
            # errors instead of this 503 with Retry-After.
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["queue"] == "40/40"
            body = {"constitution": "harmless", "pairs": [PAIR]}
            refused = await http.post("/v1/labels", json=body)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "3"
            admission.queued_units = 0
            admission.start_draining()
            assert (await http.get("/health/ready")).status_code == 503  # draining still is
