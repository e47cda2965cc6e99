"""uvicorn with Kubernetes-style draining on SIGTERM (DESIGN.md §6).

The first SIGTERM turns the service unready and refuses new work with 503; admitted
requests run on for up to `drain_timeout_s`, then are cut with 503 and Retry-After (a
shutdown is the server's choice, never a 500). A second signal exits at once. The gRPC
server (`CAI_JUDGE_GRPC_PORT`) and an open metrics port (`CAI_JUDGE_METRICS_PORT`, for the
scraper alone) run in this process and follow the same drain. Exit status 0 after a drain,
1 when the engine died or a port could not be bound, so the orchestrator restarts the pod.

The reasoning at length: docs/internals.md, section "api/server.py".
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

import uvicorn
from fastapi import FastAPI
from prometheus_client import start_http_server

from cai_judge.api.app import create_app
from cai_judge.services.container import Services
from cai_judge.settings import Settings

if TYPE_CHECKING:
    from cai_judge.grpc.server import GrpcServer

logger = logging.getLogger(__name__)

# After cutting admitted work: time for its 503 answers to reach the clients.
ABORT_ANSWER_GRACE_S = 5.0
# gRPC calls still open when the process stops (only calls that hold no admitted work,
# e.g. a Watch on health) get this long before they are cancelled.
GRPC_STOP_GRACE_S = 1.0


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        drain_timeout_s: float,
        grpc_port: int = 0,
        metrics_port: int = 0,
    ) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout_s = drain_timeout_s
        self.drain_deadline: float | None = None
        self.answer_deadline: float | None = None
        self.grpc_port = grpc_port
        self.grpc: GrpcServer | None = None
        self.port_failed = False
        self._grpc_draining = False
        self.metrics_port = metrics_port
        self.metrics_server: tuple[WSGIServer, threading.Thread] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        services = self.services
        if self.should_exit or services is None:
            return
        if self.metrics_port:
            try:
                self.metrics_server = start_http_server(
                    self.metrics_port, addr=self.config.host, registry=services.metrics.registry
                )
            except OSError as error:
                logger.error("cannot serve metrics on port %d: %s", self.metrics_port, error)
                self.port_failed = True
                self.should_exit = True
                return
        if not self.grpc_port:
            return
        from cai_judge.grpc.server import GrpcServer

        grpc_server = GrpcServer(services)
        try:
            await grpc_server.start()
        except RuntimeError as error:
            logger.error("%s", error)
            self.port_failed = True
            self.should_exit = True
            return
        self.grpc = grpc_server

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc is not None:
            await self.grpc.stop(GRPC_STOP_GRACE_S)
        if self.metrics_server is not None:
            # Scrapes go on through the drain, so the last numbers are seen; stop last.
            httpd, thread = self.metrics_server
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
        await super().shutdown(sockets)

    @property
    def services(self) -> Services | None:
        services: Services | None = self.app.state.services
        return services

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_deadline is not None or self.services is None:
            super().handle_exit(sig, frame)
            return
        # Runs as a signal handler: only set flags; on_tick acts on them.
        self.services.admission.start_draining()
        self.drain_deadline = time.monotonic() + self.drain_timeout_s

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        services = self.services
        if self.drain_deadline is None or self.should_exit or services is None:
            return should_exit or self.should_exit
        admission = services.admission
        now = time.monotonic()
        if self.grpc is not None and not self._grpc_draining:
            self._grpc_draining = True
            await self.grpc.start_draining()
        open_streams = self.grpc.open_streams if self.grpc is not None else 0
        if admission.active_requests == 0 and open_streams == 0:
            self.should_exit = True
        elif self.answer_deadline is None and now >= self.drain_deadline:
            cut = admission.abort_admitted()
            logger.warning("drain timeout: cut %d request(s), answering them 503", cut)
            self.answer_deadline = now + ABORT_ANSWER_GRACE_S
        elif self.answer_deadline is not None and now >= self.answer_deadline:
            self.should_exit = True
        return should_exit or self.should_exit


def serve(settings: Settings) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # After draining, whatever is still open is closed at once.
        timeout_graceful_shutdown=1,
        log_level="info",
        access_log=False,
    )
    server = DrainingServer(
        config, app, settings.drain_timeout_s, settings.grpc_port, settings.metrics_port
    )
    server.run()
    if server.port_failed or (
        server.services is not None and server.services.admission.engine_dead
    ):
        sys.exit(1)
