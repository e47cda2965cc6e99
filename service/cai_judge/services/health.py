"""Readiness and the engine watchdog, shared by HTTP probes and gRPC health (DESIGN.md §6).

A dead engine cannot recover in-process, and neither, in practice, can one that stops
answering: `watch_engine` declares the engine dead after an error, or after
`engine_health_timeouts` consecutive health checks without an answer within
`engine_hang_timeout_s`, and calls `on_dead` (the server then exits so that Kubernetes
restarts the pod). Readiness turns 503 at the first slow answer (`ready_timeout_s`), so
traffic moves elsewhere at once, but a busy engine is not a dead one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from cai_judge.engine.base import Engine, EngineUnavailable
from cai_judge.services.admission import Admission
from cai_judge.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)


class HealthService:
    def __init__(self, engine: Engine, admission: Admission, settings: Settings) -> None:
        self.engine = engine
        self.admission = admission
        self.settings = settings

    async def readiness(self) -> Readiness:
        admission, settings = self.admission, self.settings
        checks = {
            "draining": "yes" if admission.draining else "no",
            "queue": f"{admission.queued_units}/{settings.max_queued_units}",
        }
        ready = not admission.draining and admission.queued_units < settings.max_queued_units
        if admission.engine_dead:
            checks["engine"] = "dead"
            return Readiness(False, checks)
        try:
            await asyncio.wait_for(self.engine.check_health(), settings.ready_timeout_s)
            checks["engine"] = "ok"
        except TimeoutError:
            checks["engine"] = f"no answer in {settings.ready_timeout_s:g} s"
            ready = False
        except EngineUnavailable as error:
            checks["engine"] = f"unavailable: {error}"
            ready = False
        except Exception as error:
            checks["engine"] = f"unhealthy: {type(error).__name__}"
            ready = False
        return Readiness(ready, checks)

    async def watch_engine(self, on_dead: Callable[[], None]) -> None:
        """Poll the engine until it is dead or hung, then mark it and call `on_dead`."""
        settings = self.settings
        timeouts = 0
        while True:
            await asyncio.sleep(settings.engine_health_interval_s)
            try:
                await asyncio.wait_for(self.engine.check_health(), settings.engine_hang_timeout_s)
                timeouts = 0
                continue
            except EngineUnavailable as error:
                # A remote fleet that is down is not this process's fault, and a restart
                # would not bring it back: stay up, unready, until a server answers.
                logger.warning("engine unavailable: %s", error)
                timeouts = 0
                continue
            except TimeoutError:
                timeouts += 1
                if timeouts < settings.engine_health_timeouts:
                    logger.warning(
                        "engine health check timed out (%d of %d in a row)",
                        timeouts, settings.engine_health_timeouts,
                    )  # fmt: skip
                    continue
                logger.error("the engine is hung: %d health checks in a row timed out", timeouts)
            except Exception:
                logger.exception("the engine is dead")
            self.admission.engine_dead = True
            on_dead()
            return
