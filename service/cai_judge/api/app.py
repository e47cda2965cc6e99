"""The one app factory: a lifespan that owns the engine, routers, middleware, handlers.

Shaped after vLLM's `entrypoints/openai`: every dependency comes in explicitly (tests
pass a running engine and a registry), the lifespan builds the transport-neutral
`Services` around the engine, and routes only map the wire to those services.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cai_judge.api.errors import register_exception_handlers
from cai_judge.api.logs import install_key_redaction
from cai_judge.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from cai_judge.api.protocol import ErrorEnvelope
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
from cai_judge.engine.base import Engine
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.services.container import Services, registry_from_settings
from cai_judge.services.metrics import package_version
from cai_judge.settings import Settings

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Awaitable[Engine]]


async def _default_engine_factory(settings: Settings) -> Engine:
    from cai_judge.engine.factory import start_engine

    return await start_engine(settings, serving=True)


def _exit_for_restart() -> None:
    # The draining server sees `engine_dead` and exits non-zero once requests are out.
    os.kill(os.getpid(), signal.SIGTERM)


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    registry: ConstitutionRegistry | None = None,
    engine_factory: EngineFactory = _default_engine_factory,
    on_engine_dead: Callable[[], None] = _exit_for_restart,
) -> FastAPI:
    """Build the service. With `engine` given, the app uses it and leaves it running."""
    settings = settings or Settings()
    install_key_redaction()
    registry = registry if registry is not None else registry_from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        inner = engine if engine is not None else await engine_factory(settings)
        services = Services.build(settings, inner, registry)
        app.state.services = services
        watchdog = asyncio.create_task(services.health.watch_engine(on_engine_dead))
        if settings.jobs_consumer:
            services.start_job_consumer()
        try:
            yield
        finally:
            watchdog.cancel()
            await services.close()
            if engine is None:
                await inner.shutdown()

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
    app.state.services = None
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
