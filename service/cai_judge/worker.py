"""`cai-judge worker`: a job consumer with no HTTP front, for engine-only nodes (DESIGN.md §8).

It builds the same Services a replica builds (engine, label cache, shared registry) and
runs one JobConsumer on the shared stream until SIGTERM or SIGINT. Then it drains: no new
chunk, the chunks in hand finish within `drain_timeout_s`. A chunk cut short (or a worker
SIGKILLed) stays unacknowledged and another consumer reclaims it (store/jobs.py), so a
worker can be killed at any moment without losing or duplicating a pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from cai_judge.settings import Settings

logger = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    pass


async def run_worker(settings: Settings, metrics_port: int | None = None) -> None:
    from cai_judge.engine.factory import start_engine
    from cai_judge.services.container import Services, registry_from_settings

    if not settings.redis_url:
        raise WorkerError("the worker takes jobs from Redis: set CAI_JUDGE_REDIS_URL")
    registry = registry_from_settings(settings)
    engine = await start_engine(settings, serving=True)
    services = Services.build(settings, engine, registry)
    consumer = services.job_consumer()
    assert consumer is not None  # Redis is configured
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.host, registry=services.metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(consumer.run())
    logger.info("worker %s consuming jobs", consumer.name)
    try:
        await asyncio.wait({task, asyncio.create_task(stop.wait())}, return_when="FIRST_COMPLETED")
        if task.done():
            task.result()  # a consumer that ended on its own failed: say why
        # Drain: take no new chunk, let the ones in hand finish up to the drain timeout;
        # whatever is cut then is reclaimed by another consumer, never lost.
        services.admission.start_draining()
        deadline = loop.time() + settings.drain_timeout_s
        while consumer.in_progress and loop.time() < deadline and not task.done():
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await services.close()
        await engine.shutdown()
        logger.info(
            "worker %s stopped after %d chunks, %d pairs",
            consumer.name,
            consumer.chunks_done,
            consumer.pairs_done,
        )
