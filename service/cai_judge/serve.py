"""`cai-judge serve`: the runtime with its fronts, the one list a new transport joins.

Started in this order and stopped in reverse: the metrics port first (scrapes go on
through the drain, so the last numbers are seen), the job consumer, gRPC, and HTTP last,
so that `/health/ready` answers 200 only once every other front is up. Which fronts run
is the settings' choice (`CAI_JUDGE_METRICS_PORT`, `CAI_JUDGE_JOBS_CONSUMER` with
`CAI_JUDGE_REDIS_URL`, `CAI_JUDGE_GRPC_PORT`); the runtime (runtime/core.py) owns the
rest: engine, Services, watchdog, signals, drain, exit status.
"""

from __future__ import annotations

import asyncio
import sys

from cai_judge.api.server import HttpFront
from cai_judge.grpc.server import GrpcFront
from cai_judge.runtime import Front, JobConsumerFront, MetricsFront, Runtime
from cai_judge.settings import Settings


def serve_fronts(settings: Settings) -> list[Front]:
    fronts: list[Front] = []
    if settings.metrics_port:
        fronts.append(MetricsFront(settings.metrics_port, settings.host))
    if settings.jobs_consumer:
        fronts.append(JobConsumerFront())  # runs only with Redis configured
    if settings.grpc_port:
        fronts.append(GrpcFront())
    fronts.append(HttpFront())
    return fronts


def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, drain, exit: 0 after a drain, 1 on a failure."""
    status = asyncio.run(Runtime(settings, serve_fronts(settings)).run())
    if status:
        sys.exit(status)
