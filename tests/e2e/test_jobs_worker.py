"""`cai-judge worker` as a real subprocess on the tiny model: it labels a job submitted to
an app that consumes nothing itself, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cai_judge.api.app import create_app
from cai_judge.engine.base import EngineError
from cai_judge.engine.vllm_async import VllmEngine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from cai_judge.worker import WorkerError, run_worker

pytestmark = pytest.mark.engine


def test_worker_without_redis_refuses_to_start(tiny_model_dir: Path):
    env = {k: v for k, v in os.environ.items() if k != "CAI_JUDGE_REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "cai_judge.cli.main", "worker", "--model", str(tiny_model_dir)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "CAI_JUDGE_REDIS_URL" in done.stderr + done.stdout


async def test_a_worker_labels_jobs_with_no_http_front(
    tiny_engine: VllmEngine, tiny_model_dir: Path, redis_url: str, tmp_path: Path
):
    log = tmp_path / "worker.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "CAI_JUDGE_MAX_MODEL_LEN": "1024",
           "CAI_JUDGE_CPU_KV_CACHE_GIB": "1", "CAI_JUDGE_JOBS_CHUNK_PAIRS": "4"}  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "cai_judge.cli.main", "worker", "--redis-url", redis_url,
         "--model", str(tiny_model_dir)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        app = create_app(
            Settings(max_model_len=1024, redis_url=redis_url, jobs_consumer=False),
            engine=tiny_engine,
            registry=ConstitutionRegistry.with_builtins(),
        )
        pairs = [{"id": f"w{i}", "prompt": f"Q{i}?", "response_a": "Yes.", "response_b": "No."}
                 for i in range(10)]  # fmt: skip
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                body = {"constitution": "harmless", "pairs": pairs, "principles": 1}
                job = (await http.post("/v1/jobs", json=body)).json()
                deadline = time.monotonic() + 300
                status = job
                while time.monotonic() < deadline and status["state"] != "succeeded":
                    assert worker.poll() is None, log.read_text()[-3000:]
                    await asyncio.sleep(0.5)
                    status = (await http.get(f"/v1/jobs/{job['id']}")).json()
                assert status["state"] == "succeeded", log.read_text()[-3000:]
                results = await http.get(f"/v1/jobs/{job['id']}/results")
                ids = [json.loads(line)["id"] for line in results.text.splitlines()]
                assert ids == [p["id"] for p in pairs]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert "stopped after" in log.read_text()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)


class DyingEngine:
    """The tiny engine, whose health checks fail as a dead engine core's do: the watchdog's
    wiring in the worker is under test, not the engine."""

    def __init__(self, inner: VllmEngine) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def check_health(self) -> None:
        raise EngineError("the engine core died")


async def test_a_worker_whose_engine_died_stops_and_fails(tiny_engine: VllmEngine, redis_url: str):
    """Issue 19: `cai-judge worker` ran no watchdog, so a dead engine kept taking chunks.
    Now the watchdog marks it dead (the consumer takes nothing) and the worker exits 1."""
    settings = Settings(max_model_len=1024, redis_url=redis_url, engine_health_interval_s=0.1)
    with pytest.raises(WorkerError, match="the engine died"):
        await asyncio.wait_for(
            run_worker(
                settings,
                engine=DyingEngine(tiny_engine),  # type: ignore[arg-type]
                registry=ConstitutionRegistry.with_builtins(),
            ),
            timeout=30,
        )
