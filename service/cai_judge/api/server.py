"""The HTTP front: uvicorn serving the app on the runtime's Services (DESIGN.md §6).

uvicorn runs as a task under the runtime's signal handling, as vLLM's `serve_http` runs
it: uvicorn's own handlers would exit on the first SIGTERM, where the runtime drains
first (the service turns unready, new work gets 503, admitted requests run on, then are
cut with 503 and Retry-After). A port uvicorn cannot bind fails the start, and with it
the process (exit status 1), instead of uvicorn's `sys.exit` inside the event loop.

The reasoning at length: docs/internals.md, sections "runtime/" and "api/server.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from cai_judge.api.app import create_app
from cai_judge.runtime import Front, FrontError
from cai_judge.services.container import Services

# Once drained, connections still open (idle keep-alives) are closed after this long.
GRACEFUL_SHUTDOWN_S = 1


class _RuntimeOwnedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The runtime owns SIGTERM/SIGINT (runtime/core.py): it drains, then stops us.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit:  # uvicorn's answer to a port it cannot bind (logged already)
            self.should_exit = True


class HttpFront(Front):
    name = "HTTP"

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, services: Services) -> None:
        settings = services.settings
        config = uvicorn.Config(
            create_app(services=services),
            host=settings.host,
            port=settings.port,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            log_level="info",
            access_log=False,
        )
        server = _RuntimeOwnedServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if not server.started:
            await task  # its exception, if it raised one
            raise FrontError(
                f"cannot serve HTTP on {settings.host}:{settings.port} (uvicorn logged why); "
                "set CAI_JUDGE_PORT to a free port"
            )
        self.server, self._task = server, task

    async def wait(self) -> None:
        assert self._task is not None
        # Not `await self._task`: cancelling the waiter must not cancel the server.
        await asyncio.wait({self._task})
        self._task.result()

    async def stop(self) -> None:
        if self.server is None or self._task is None:
            return
        self.server.should_exit = True
        await self._task
