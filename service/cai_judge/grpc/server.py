"""The gRPC front: grpc.aio beside uvicorn, same process, event loop and Services (DESIGN.md §8).

The runtime (runtime/core.py) starts it once the Services are built and stops it before
they close; `open_streams` is its in-flight work, which the drain waits for. It serves the
Judge service, `grpc.health.v1` (following readiness exactly as `GET /health/ready` does)
and reflection (behind the API key, as `/openapi.json` is). On SIGTERM health turns
NOT_SERVING, new calls get UNAVAILABLE and open LabelStreams finish.

The reasoning at length: docs/internals.md, section "grpc/server.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cai_judge.grpc.errors import to_grpc
from cai_judge.grpc.gen.v1 import judge_pb2_grpc
from cai_judge.grpc.servicer import SERVICE_NAME, JudgeServicer, presented_key
from cai_judge.runtime import Front, FrontError
from cai_judge.services.container import Services
from cai_judge.services.errors import Unauthenticated
from cai_judge.services.security import Authenticator

logger = logging.getLogger(__name__)

HEALTH_POLL_S = 1.0
# gRPC calls still open when the process stops (only calls that hold no admitted work,
# e.g. a Watch on health) get this long before they are cancelled.
GRPC_STOP_GRACE_S = 1.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ReadinessHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 whose status is the service's readiness, asked at each Check."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services

    async def refresh(self) -> bool:
        readiness = await self.services.health.readiness()
        status = SERVING if readiness.ready else NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.set(name, status)
        return readiness.ready

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        await self.refresh()
        return await super().Check(request, context)

    async def poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a probe must never kill the server
                logger.exception("gRPC health refresh failed")
            await asyncio.sleep(HEALTH_POLL_S)


class ReflectionNeedsKey(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses reflection calls without a valid key (when keys are configured)."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        if not self.auth.enabled or not details.method.startswith(f"/{reflection.SERVICE_NAME}/"):
            return await continuation(details)
        try:
            metadata = dict(details.invocation_metadata or ())
            self.auth.authenticate(presented_key(metadata), anonymous_identity="reflection")
        except Unauthenticated as error:
            refusal = to_grpc(error)

            async def refuse(requests: Any, context: Any) -> None:
                await context.abort(refusal.code, refusal.details, refusal.trailing_metadata)

            return grpc.stream_stream_rpc_method_handler(refuse)
        return await continuation(details)


class GrpcServer:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.servicer = JudgeServicer(services)
        self.health = ReadinessHealth(services)
        self.port: int | None = None
        self._server: Any = None
        self._poller: asyncio.Task[None] | None = None

    @property
    def open_streams(self) -> int:
        return self.servicer.open_streams

    async def start(self) -> int:
        """Bind and serve; the port actually bound (RuntimeError if it cannot be)."""
        settings = self.services.settings
        server = grpc.aio.server(
            interceptors=[ReflectionNeedsKey(self.services.auth)],
            options=[
                # The HTTP API's body limit, for one message.
                ("grpc.max_receive_message_length", settings.max_body_bytes),
            ],
        )
        judge_pb2_grpc.add_JudgeServicer_to_server(self.servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise RuntimeError(
                f"cannot listen for gRPC on {address} ({error}); set CAI_JUDGE_GRPC_PORT to "
                "a free port, or 0 for no gRPC server"
            ) from None
        if not port:  # older grpcio reports a failed bind as port 0
            raise RuntimeError(
                f"cannot listen for gRPC on {address}; set CAI_JUDGE_GRPC_PORT to a free "
                "port, or 0 for no gRPC server"
            )
        await server.start()
        self._server = server
        self.port = port
        await self.health.refresh()
        self._poller = asyncio.create_task(self.health.poll())
        logger.info("gRPC server listening on %s:%d", settings.host, port)
        return int(port)

    async def start_draining(self) -> None:
        """NOT_SERVING at once (admission already refuses new work)."""
        if self._poller is not None:
            await self.health.refresh()

    async def stop(self, grace_s: float) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._server is not None:
            await self._server.stop(grace_s)


class GrpcFront(Front):
    name = "gRPC"

    def __init__(self) -> None:
        self.server: GrpcServer | None = None

    async def start(self, services: Services) -> None:
        server = GrpcServer(services)
        try:
            await server.start()
        except RuntimeError as error:  # the message names CAI_JUDGE_GRPC_PORT
            raise FrontError(str(error)) from None
        self.server = server

    async def drain(self) -> None:
        if self.server is not None:
            await self.server.start_draining()

    @property
    def in_flight(self) -> int:
        return self.server.open_streams if self.server is not None else 0

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(GRPC_STOP_GRACE_S)
