"""Readiness and the engine watchdog, shared by HTTP probes and gRPC health (DESIGN.md §6).

A dead or hung engine cannot recover in process: `watch_engine` declares it dead after an
error or `engine_health_timeouts` slow checks and calls `on_dead` (the server exits, the pod
restarts); readiness turns 503 at the first slow answer, but busy is not dead. The open
`/health/ready` is cheap (one probe per `ready_cache_s`) and names no internal address; a
full queue keeps the pod ready, so clients get 503 with Retry-After, not connection errors.

The reasoning at length: docs/internals.md, section "services/health.py".
"""

from __future__ import annotations

import asyncio
import logging
import time
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
        # The last engine probe: its answer and when it started; and the one in flight.
        self._probe: tuple[float, str] | None = None
        self._probing: asyncio.Task[str] | None = None

    async def readiness(self) -> Readiness:
        admission, settings = self.admission, self.settings
        checks = {
            "draining": "yes" if admission.draining else "no",
            # Reported, not a reason to be unready: admission answers a full queue 503.
            "queue": f"{admission.queued_units}/{settings.max_queued_units}",
            # Stated, not a reason to be unready: `open` means no key is checked and every
            # caller is admin (CAI_JUDGE_ALLOW_OPEN, or no key setting at all).
            "auth": "keys" if settings.auth_enabled else "open",
        }
        if admission.engine_dead:
            checks["engine"] = "dead"
            return Readiness(False, checks)
        checks["engine"] = await self._engine_state()
        return Readiness(not admission.draining and checks["engine"] == "ok", checks)

    async def _engine_state(self) -> str:
        """The engine's state as the open answer gives it, probed at most once per
        `ready_cache_s` and once at a time, whoever asks."""
        now = time.monotonic()
        if self._probe is not None and now - self._probe[0] < self.settings.ready_cache_s:
            return self._probe[1]
        if self._probing is None or self._probing.done():
            self._probing = asyncio.create_task(self._probe_engine(now))
        # A caller that leaves does not cancel the probe the others wait on.
        return await asyncio.shield(self._probing)

    async def _probe_engine(self, started: float) -> str:
        timeout = self.settings.ready_timeout_s
        try:
            await asyncio.wait_for(self.engine.check_health(), timeout)
            state = "ok"
        except TimeoutError:
            state = f"no answer in {timeout:g} s"
        except EngineUnavailable as error:
            # The error names the fleet's servers and their failures: log, never answer.
            logger.warning("readiness: engine unavailable: %s", error)
            state = "unavailable"
        except Exception as error:
            logger.warning("readiness: engine unhealthy: %r", error)
            state = "unhealthy"
        self._probe = (started, state)
        return state

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
