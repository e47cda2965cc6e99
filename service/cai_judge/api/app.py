"""The one app factory: routers, middleware, handlers, and the Services they call.

Shaped after vLLM's `entrypoints/openai`: every dependency comes in explicitly, and
routes only map the wire to the transport-neutral `Services`. Under `cai-judge serve` the
runtime owns the Services and hands them in (`services=`, api/server.py's HTTP front);
an app built without them (tests, embedders: a running engine and a registry passed in)
runs a runtime of its own in its lifespan, with the job consumer as its one front, so
the engine, the Services, the watchdog and the consumer start in one place either way.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cai_judge.api.errors import register_exception_handlers
from cai_judge.api.logs import install_key_redaction
from cai_judge.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from cai_judge.api.routes import (
    constitutions,
    health,
    jobs,
    labels,
    limits,
    meta,
    revisions,
    rewards,
)
from cai_judge.api.routes.group_rewards import router as group_rewards_router
from cai_judge.api.schemas import ErrorEnvelope
from cai_judge.engine.base import Engine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.runtime import Front, JobConsumerFront, Runtime
from cai_judge.runtime.core import EngineFactory, start_serving_engine
from cai_judge.services.container import Services, registry_from_settings
from cai_judge.services.metrics import package_version
from cai_judge.settings import Settings

logger = logging.getLogger(__name__)


def _exit_for_restart() -> None:
    # Whatever runs this app drains on SIGTERM, sees `engine_dead` and exits non-zero.
    os.kill(os.getpid(), signal.SIGTERM)


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    engine: Engine | None = None,
    registry: ConstitutionRegistry | None = None,
    engine_factory: EngineFactory = start_serving_engine,
    on_engine_dead: Callable[[], None] = _exit_for_restart,
) -> FastAPI:
    """Build the service. With `services` given (the runtime's HTTP front) the app serves
    them and owns nothing; otherwise its lifespan runs them (`engine` given: used and
    left running)."""
    if services is not None:
        settings = services.settings
    settings = settings or Settings()
    install_key_redaction()
    if services is None:
        registry = registry if registry is not None else registry_from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:  # the runtime's: it starts, drains and closes them
            yield
            return
        fronts: list[Front] = [JobConsumerFront()] if settings.jobs_consumer else []
        runtime = Runtime(
            settings,
            fronts,
            engine=engine,
            registry=registry,
            engine_factory=engine_factory,
            on_engine_dead=on_engine_dead,
        )
        async with runtime.serving() as built:
            app.state.services = built
            yield

    app = FastAPI(
        title="cai-judge",
        version=package_version(),
        summary="Constitutional-AI preference labels for Bradley-Terry reward models.",
        lifespan=lifespan,
        # Served by routes/meta.py instead, behind the API key when keys are set.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        responses={422: {"model": ErrorEnvelope, "description": "Invalid request"}},
    )
    app.state.services = services
    register_exception_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    for router in (labels.router, constitutions.router, health.router, meta.router, limits.router):
        app.include_router(router)
    app.include_router(revisions.router)
    app.include_router(rewards.router)
    app.include_router(group_rewards_router)  # group rewards: POST /v1/rewards/sample
    # Without Redis the jobs routes answer 503 naming the setting, and stay out of the
    # OpenAPI document: they cannot work on this deployment.
    app.include_router(jobs.router, include_in_schema=bool(settings.redis_url))
    return app
