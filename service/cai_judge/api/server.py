"""uvicorn with Kubernetes-style draining on SIGTERM (DESIGN.md §6).

On the first SIGTERM the service stays up but turns unready (503 on /health/ready) and
refuses new labeling work, waits for in-flight requests up to `drain_timeout_s`, then
exits; uvicorn's graceful shutdown then cancels whatever is left, and the lifespan shuts
the engine down, which aborts its requests. A second signal exits at once.
"""

from __future__ import annotations

import logging
import time
from types import FrameType

import uvicorn

from cai_judge.api.app import ServiceState, create_app
from cai_judge.settings import Settings

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self.service_state = state
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_deadline is not None:
            super().handle_exit(sig, frame)
            return
        # Runs as a signal handler: only set flags; on_tick acts on them.
        self.service_state.draining = True
        self.drain_deadline = time.monotonic() + self.service_state.settings.drain_timeout_s

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        if self.drain_deadline is not None and not self.should_exit:
            idle = self.service_state.active_requests == 0
            if idle or time.monotonic() >= self.drain_deadline:
                if not idle:
                    logger.warning(
                        "drain timeout: aborting %d request(s)", self.service_state.active_requests
                    )
                self.should_exit = True
        return should_exit or self.should_exit


def serve(settings: Settings) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # After draining, whatever is still running is cancelled at once.
        timeout_graceful_shutdown=1,
        log_level="info",
        access_log=False,
    )
    DrainingServer(config, app.state.service).run()
