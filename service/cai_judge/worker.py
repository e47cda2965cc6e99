"""`cai-judge worker`: a job consumer with no HTTP front, for engine-only nodes (DESIGN.md §8).

It builds the same Services a replica builds (engine, label cache, shared registry) and
runs one JobConsumer on the shared stream until SIGTERM or SIGINT. Then it drains: no new
chunk, the chunks in hand finish within `drain_timeout_s`. A chunk cut short (or a worker
SIGKILLed) stays unacknowledged and another consumer reclaims it (store/jobs.py), so a
worker can be killed at any moment without losing or duplicating a pair.

It runs the engine watchdog `serve` runs (services/health.py, DESIGN.md §6): a worker
whose engine died (or hung) takes no more chunks, and exits non-zero so that its
orchestrator restarts it; the chunks it held are reclaimed by the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from cai_judge.engine.base import Engine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings

logger = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    pass


async def run_worker(
    settings: Settings,
    metrics_port: int | None = None,
    *,
    engine: Engine | None = None,
    registry: ConstitutionRegistry | None = None,
) -> None:
    """Consume until SIGTERM/SIGINT; raises WorkerError when the engine died. With
    `engine` given (tests), the worker uses it and leaves it running."""
    from cai_judge.engine.factory import start_engine
    from cai_judge.services.container import Services, registry_from_settings

    if not settings.redis_url:
        raise WorkerError("the worker takes jobs from Redis: set CAI_JUDGE_REDIS_URL")
    registry = registry if registry is not None else registry_from_settings(settings)
    own_engine = engine is None
    inner = engine if engine is not None else await start_engine(settings, serving=True)
    services = Services.build(settings, inner, registry)
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
    # The watchdog marks the engine dead (the consumer then takes nothing new) and stops.
    watchdog = asyncio.create_task(services.health.watch_engine(stop.set))
    logger.info("worker %s consuming jobs", consumer.name)
    try:
        await asyncio.wait({task, asyncio.create_task(stop.wait())}, return_when="FIRST_COMPLETED")
        if task.done():
            task.result()  # a consumer that ended on its own failed: say why
        if services.admission.engine_dead:
            raise WorkerError(
                f"worker {consumer.name}: the engine died; exiting so that it is restarted "
                "(its chunks in hand are reclaimed by other consumers)"
            )
        # Drain: take no new chunk, let the ones in hand finish up to the drain timeout;
        # whatever is cut then is reclaimed by another consumer, never lost.
        services.admission.start_draining()
        deadline = loop.time() + settings.drain_timeout_s
        while consumer.in_progress and loop.time() < deadline and not task.done():
            await asyncio.sleep(0.1)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        watchdog.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await services.close()
        if own_engine:
            with contextlib.suppress(Exception):  # a dead engine may fail to shut down
                await inner.shutdown()
        logger.info(
            "worker %s stopped after %d chunks, %d pairs",
            consumer.name,
            consumer.chunks_done,
            consumer.pairs_done,
        )
