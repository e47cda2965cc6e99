"""The one app factory: a lifespan that owns the engine, routes, middleware, handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cai_judge.api.errors import ApiError, location_to_param, register_exception_handlers
from cai_judge.api.metrics import ServiceMetrics
from cai_judge.api.protocol import (
    ConstitutionList,
    ConstitutionSummary,
    ErrorDetail,
    ErrorEnvelope,
    HealthStatus,
    ItemError,
    LabelRequest,
    LabelResponse,
)
from cai_judge.api.security import ApiKeyChecker, RateLimiter
from cai_judge.engine.base import Engine
from cai_judge.engine.batching import BatchingEngine
from cai_judge.labeling.constitution import ConstitutionRegistry, ConstitutionSpec
from cai_judge.labeling.judge import Judge
from cai_judge.labeling.schema import Label, LabelOptions, Pair, PairError
from cai_judge.settings import Settings

logger = logging.getLogger(__name__)

HEALTH_CHECK_INTERVAL_S = 5.0


@dataclass
class ServiceState:
    """What the routes and the draining server share."""

    settings: Settings
    registry: ConstitutionRegistry
    metrics: ServiceMetrics | None = None
    engine: BatchingEngine | None = None
    judge: Judge | None = None
    keys: ApiKeyChecker = field(default_factory=lambda: ApiKeyChecker([]))
    rate_limiter: RateLimiter | None = None
    draining: bool = False
    engine_dead: bool = False
    queued_units: int = 0
    active_requests: int = 0


def _retry_after(settings: Settings) -> dict[str, str]:
    return {"Retry-After": str(settings.retry_after_s)}


class BodyLimitMiddleware:
    """413 for bodies over the limit, by header or by counting what actually arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"error": self._error(int(declared))}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise StarletteHTTPException(413, self._error(received)["message"])
            return message

        await self.app(scope, counting_receive, send)

    def _error(self, size: int) -> dict[str, Any]:
        return {
            "type": "request_too_large",
            "message": f"request body of {size} bytes is over the limit of {self.max_bytes}",
            "param": None,
        }


class MetricsMiddleware:
    """Counts and times every request by route template (bounded label values)."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.state.metrics is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def recording_send(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics = self.state.metrics
            metrics.requests.labels(route=route, code=str(code)).inc()
            metrics.request_duration.labels(route=route).observe(time.perf_counter() - started)


EngineFactory = Callable[[Settings], Awaitable[Engine]]


async def _default_engine_factory(settings: Settings) -> Engine:
    from cai_judge.engine.factory import start_engine

    return await start_engine(settings)


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    registry: ConstitutionRegistry | None = None,
    engine_factory: EngineFactory = _default_engine_factory,
) -> FastAPI:
    """Build the service. With `engine` given, the app uses it and leaves it running."""
    settings = settings or Settings()
    if registry is None:
        extra = [settings.constitutions_dir] if settings.constitutions_dir else []
        registry = ConstitutionRegistry.with_builtins(extra)
    state = ServiceState(
        settings=settings,
        registry=registry,
        keys=ApiKeyChecker(settings.api_key_hashes),
        rate_limiter=RateLimiter(settings.rate_limit),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        inner = engine if engine is not None else await engine_factory(settings)
        state.metrics = ServiceMetrics(inner.model_name)
        state.engine = BatchingEngine(
            inner,
            window_s=settings.batch_window_ms / 1000,
            on_batch=state.metrics.observe_batch,
            on_abort=state.metrics.observe_aborted,
        )
        state.judge = Judge(state.engine, registry, settings.use_chat_template())
        monitor = asyncio.create_task(_watch_engine(state))
        try:
            yield
        finally:
            monitor.cancel()
            await state.engine.shutdown()
            if engine is None:
                await inner.shutdown()

    app = FastAPI(
        title="cai-judge",
        version="0.1.0",
        summary="Constitutional-AI preference labels for Bradley-Terry reward models.",
        lifespan=lifespan,
        responses={422: {"model": ErrorEnvelope, "description": "Invalid request"}},
    )
    app.state.service = state
    register_exception_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, state=state)
    _add_routes(app, state)
    return app


async def _watch_engine(state: ServiceState) -> None:
    """A dead engine cannot recover in-process: mark unready and exit to be restarted."""
    assert state.engine is not None
    while True:
        await asyncio.sleep(HEALTH_CHECK_INTERVAL_S)
        try:
            await asyncio.wait_for(state.engine.check_health(), state.settings.ready_timeout_s)
        except TimeoutError:
            continue  # busy, not dead: readiness reports it
        except Exception:
            logger.exception("the engine is dead; exiting so the orchestrator restarts us")
            state.engine_dead = True
            os.kill(os.getpid(), signal.SIGTERM)
            return


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in {
        401: "Missing or wrong API key",
        404: "Unknown constitution or version",
        413: "Request body over the limit",
        429: "Rate limit; retry after `Retry-After` seconds",
        503: "Queue full or draining; retry after `Retry-After` seconds",
    }.items()
}


def identify(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str:
    """The caller's identity for rate limiting; 401 when keys are configured."""
    state: ServiceState = request.app.state.service
    if not state.keys.enabled:
        return request.client.host if request.client else "anonymous"
    presented = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        presented = authorization[7:].strip()
    identity = state.keys.identify(presented)
    if identity is None:
        raise ApiError(
            401, "unauthorized", "missing or invalid API key", "authorization",
            {"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return identity


# Module level, not inside the factory: FastAPI resolves these string annotations
# (PEP 563) in the module's globals.
Caller = Annotated[str, Depends(identify)]


def _add_routes(app: FastAPI, state: ServiceState) -> None:
    settings = state.settings

    def reject(reason: str) -> None:
        if state.metrics is not None:
            state.metrics.admission_rejections.labels(reason=reason).inc()

    @app.post(
        "/v1/labels",
        response_model=LabelResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        tags=["labels"],
        summary="Label pairs against a constitution",
    )
    async def create_labels(body: LabelRequest, request: Request, caller: Caller) -> Any:
        if state.draining or state.engine_dead:
            reject("draining")
            raise ApiError(503, "unavailable", "server is draining", None, _retry_after(settings))
        assert state.rate_limiter is not None and state.judge is not None
        wait = state.rate_limiter.hit(caller)
        if wait is not None:
            reject("rate_limit")
            raise ApiError(
                429, "rate_limited", f"rate limit of {settings.rate_limit} exceeded", None,
                {"Retry-After": str(int(wait))},
            )  # fmt: skip
        if len(body.pairs) > settings.max_pairs_per_request:
            raise ApiError(
                422, "too_many_pairs",
                f"{len(body.pairs)} pairs, over the limit of {settings.max_pairs_per_request} "
                "per request", "pairs",
            )  # fmt: skip
        spec = state.registry.resolve(body.constitution)
        options = LabelOptions(
            principles=body.principles,
            seed=body.seed,
            aggregator=body.aggregator,
            per_principle=body.per_principle,
            low_mass_threshold=settings.low_mass_threshold,
        )
        valid, invalid = _validate_pairs(body.pairs)
        per_pair = min(options.k or len(spec.principles), len(spec.principles)) * 2
        units = per_pair * len(valid)
        if units > settings.max_queued_units:
            raise ApiError(
                422, "request_too_large",
                f"request needs {units} score units, over the queue capacity of "
                f"{settings.max_queued_units}; send fewer pairs or principles", "pairs",
            )  # fmt: skip
        if state.queued_units + units > settings.max_queued_units:
            reject("queue_full")
            raise ApiError(
                503, "queue_full",
                f"queue full ({state.queued_units} of {settings.max_queued_units} score units)",
                None, _retry_after(settings),
            )  # fmt: skip
        state.queued_units += units
        state.active_requests += 1
        metrics = state.metrics
        assert metrics is not None
        metrics.queue_depth.set(state.queued_units)
        metrics.inflight.inc()
        try:
            batch = await _run_unless_disconnected(
                request, state.judge.label([p for _, p in valid], spec, options)
            )
        finally:
            state.queued_units -= units
            state.active_requests -= 1
            metrics.queue_depth.set(state.queued_units)
            metrics.inflight.dec()
        if batch is None:  # the client left; nobody reads a response
            return Response(status_code=499)
        metrics.observe_labels(batch.labels, batch.usage)
        results: list[Label | ItemError | None] = [None] * len(body.pairs)
        for index, error in invalid:
            results[index] = error
        for (index, _), result in zip(valid, batch.results, strict=True):
            results[index] = result if isinstance(result, Label) else _item_error(index, result)
        return LabelResponse(labels=[r for r in results if r is not None], usage=batch.usage)

    @app.get(
        "/v1/constitutions", response_model=ConstitutionList, tags=["constitutions"],
        responses=ERROR_RESPONSES, summary="List constitutions",
    )  # fmt: skip
    async def list_constitutions(caller: Caller) -> ConstitutionList:
        summaries = []
        for constitution_id in state.registry.ids():
            latest = state.registry.resolve(constitution_id)
            summaries.append(
                ConstitutionSummary(
                    id=latest.id,
                    latest_version=latest.version,
                    versions=state.registry.versions(constitution_id),
                    principles=len(latest.principles),
                    description=latest.description,
                )
            )
        return ConstitutionList(constitutions=summaries)

    @app.get(
        "/v1/constitutions/{ref}", tags=["constitutions"], responses=ERROR_RESPONSES,
        summary="One constitution: `id` (latest) or `id@version`",
        response_model=dict[str, Any],
    )  # fmt: skip
    async def get_constitution(ref: str, caller: Caller) -> dict[str, Any]:
        spec = state.registry.resolve(ref)
        return _constitution_body(spec)

    @app.post(
        "/v1/constitutions", status_code=201, tags=["constitutions"], responses=ERROR_RESPONSES,
        summary="Add an immutable constitution version", response_model=dict[str, Any],
    )  # fmt: skip
    async def add_constitution(spec: ConstitutionSpec, caller: Caller) -> dict[str, Any]:
        # The body is validated by the same model the YAML loader uses.
        return _constitution_body(state.registry.add(spec))

    @app.get("/health/live", response_model=HealthStatus, tags=["health"])
    async def live() -> HealthStatus:
        # Answering at all proves the event loop runs.
        return HealthStatus(status="ok", checks={"event_loop": "ok"})

    @app.get(
        "/health/ready", response_model=HealthStatus, tags=["health"],
        responses={503: {"model": HealthStatus, "description": "Not ready"}},
    )  # fmt: skip
    async def ready() -> JSONResponse:
        checks = {
            "draining": "yes" if state.draining else "no",
            "queue": f"{state.queued_units}/{settings.max_queued_units}",
        }
        ok = not state.draining and state.queued_units < settings.max_queued_units
        if state.engine is None or state.engine_dead:
            checks["engine"] = "dead" if state.engine_dead else "starting"
            ok = False
        else:
            try:
                await asyncio.wait_for(state.engine.check_health(), settings.ready_timeout_s)
                checks["engine"] = "ok"
            except Exception as error:
                checks["engine"] = f"unhealthy: {type(error).__name__}"
                ok = False
        status = HealthStatus(status="ok" if ok else "unavailable", checks=checks)
        return JSONResponse(status.model_dump(), status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], response_class=Response, responses=ERROR_RESPONSES)
    async def metrics(caller: Caller) -> Response:
        assert state.metrics is not None
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _constitution_body(spec: ConstitutionSpec) -> dict[str, Any]:
    return {"version": spec.version, **spec.model_dump(mode="json")}


def _validate_pairs(
    raw_pairs: list[Pair | dict[str, Any]],
) -> tuple[list[tuple[int, Pair]], list[tuple[int, ItemError]]]:
    valid: list[tuple[int, Pair]] = []
    invalid: list[tuple[int, ItemError]] = []
    for index, raw in enumerate(raw_pairs):
        if isinstance(raw, Pair):
            valid.append((index, raw))
            continue
        try:
            valid.append((index, Pair.model_validate(raw)))
        except ValidationError as error:
            first = error.errors()[0]
            param = location_to_param(["pairs", index, *first["loc"]])
            raw_id = raw.get("id")
            invalid.append(
                (
                    index,
                    ItemError(
                        id=raw_id if isinstance(raw_id, str) else None,
                        index=index,
                        error=ErrorDetail(
                            type="invalid_pair", message=f"{param}: {first['msg']}", param=param
                        ),
                    ),
                )
            )
    return valid, invalid


def _item_error(index: int, error: PairError) -> ItemError:
    return ItemError(
        id=error.id,
        index=index,
        error=ErrorDetail(type="invalid_pair", message=error.error, param=f"pairs.{index}"),
    )


T = TypeVar("T")


async def _run_unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Run `work`; if the client disconnects first, cancel it (aborting engine requests)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    logger.info("client disconnected; its engine work was aborted")
    return None
