"""`cai-judge worker`: a job consumer with no HTTP front, for engine-only nodes (DESIGN.md §8).

It is the runtime (runtime/core.py) with the job consumer as its front, and the metrics
port when asked: the same engine start, Services, engine watchdog, signals and drain as
`serve`. On SIGTERM or SIGINT it takes no new chunk and the chunks in hand finish within
`drain_timeout_s`. A chunk cut short (or a worker SIGKILLed) stays unacknowledged and
another consumer reclaims it (store/jobs.py), so a worker can be killed at any moment
without losing or duplicating a pair. A worker whose engine died (or hung) takes no more
chunks and exits non-zero so that its orchestrator restarts it.
"""

from __future__ import annotations

from cai_judge.engine.base import Engine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.runtime import Front, JobConsumerFront, MetricsFront, Runtime
from cai_judge.settings import Settings


class WorkerError(RuntimeError):
    pass


async def run_worker(
    settings: Settings,
    metrics_port: int | None = None,
    *,
    engine: Engine | None = None,
    registry: ConstitutionRegistry | None = None,
) -> None:
    """Consume until SIGTERM/SIGINT; raises WorkerError when the engine died or a front
    failed. With `engine` given (tests), the worker uses it and leaves it running."""
    if not settings.redis_url:  # before the engine starts
        raise WorkerError("the worker takes jobs from Redis: set CAI_JUDGE_REDIS_URL")
    consumer = JobConsumerFront(worker=True)
    fronts: list[Front] = [consumer]
    if metrics_port is not None:
        fronts.insert(0, MetricsFront(metrics_port, settings.host))
    runtime = Runtime(settings, fronts, engine=engine, registry=registry)
    await runtime.run()
    name = consumer.consumer.name if consumer.consumer is not None else "(not started)"
    if runtime.engine_dead:
        raise WorkerError(
            f"worker {name}: the engine died; exiting so that it is restarted "
            "(its chunks in hand are reclaimed by other consumers)"
        )
    if runtime.failure is not None:
        raise WorkerError(f"worker {name}: {runtime.failure}")
