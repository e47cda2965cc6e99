"""The fronts that are no wire of their own: the metrics port and the job consumer.

The metrics port is prometheus-client's HTTP server in a thread, open without a key for
the scraper alone (keys guard the API port, and Prometheus has none to send). It starts
first and stops last, so the drain's last numbers are scraped. The job consumer takes
chunks off the shared stream (services/job_consumer.py); the drain waits for the chunks
in hand, and one cut by the stop stays pending for another consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from cai_judge.runtime.core import Front, FrontError
from cai_judge.services.container import Services
from cai_judge.services.job_consumer import JobConsumer

logger = logging.getLogger(__name__)


class MetricsFront(Front):
    name = "metrics"

    def __init__(self, port: int, host: str) -> None:
        self.port = port
        self.host = host
        self._server: tuple[WSGIServer, threading.Thread] | None = None

    async def start(self, services: Services) -> None:
        try:
            self._server = start_http_server(
                self.port, addr=self.host, registry=services.metrics.registry
            )
        except OSError as error:
            raise FrontError(f"cannot serve metrics on port {self.port}: {error}") from None

    async def stop(self) -> None:
        if self._server is None:
            return
        httpd, thread = self._server
        self._server = None
        # shutdown() waits for the serving thread's next poll: off the event loop.
        await asyncio.to_thread(httpd.shutdown)
        httpd.server_close()
        await asyncio.to_thread(thread.join, 5)


class JobConsumerFront(Front):
    """The job consumer. `worker=True` is `cai-judge worker`'s: Redis is required, and the
    consumer's start and totals are logged; a replica's consumer runs only with Redis."""

    name = "job consumer"

    def __init__(self, *, worker: bool = False) -> None:
        self.worker = worker
        self.consumer: JobConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, services: Services) -> None:
        consumer = services.job_consumer()
        if consumer is None:
            if self.worker:
                raise FrontError("the worker takes jobs from Redis: set CAI_JUDGE_REDIS_URL")
            return
        self.consumer = consumer
        self._task = asyncio.create_task(consumer.run())
        if self.worker:
            logger.info("worker %s consuming jobs", consumer.name)

    @property
    def in_flight(self) -> int:
        return self.consumer.in_progress if self.consumer is not None else 0

    async def wait(self) -> None:
        if self._task is None:
            await super().wait()
            return
        # Not `await self._task`: cancelling the waiter must not cancel the consumer.
        await asyncio.wait({self._task})
        self._task.result()  # a consumer ends only by failing: say why

    async def stop(self) -> None:
        """Its chunks in hand are not acknowledged: another consumer reclaims them."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if self.worker and self.consumer is not None:
            logger.info(
                "worker %s stopped after %d chunks, %d pairs",
                self.consumer.name,
                self.consumer.chunks_done,
                self.consumer.pairs_done,
            )
