"""ASGI middleware: the body-size limit and per-route request metrics."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cai_judge.api.errors import BodyTooLarge, error_response

STREAMED_UPLOADS = (b"application/x-ndjson", b"application/jsonl", b"application/jsonlines")


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
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope.get("path") == "/v1/jobs" and content_type in STREAMED_UPLOADS:
            # A job's NDJSON upload streams into Redis line by line; the job service
            # bounds each line and the pair count instead.
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            # Refused before a byte of the body is read.
            error = BodyTooLarge(int(declared), self.max_bytes)
            await error_response(413, "request_too_large", str(error))(scope, receive, send)
            return
        received = 0
        too_large: BodyTooLarge | None = None

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = BodyTooLarge(received, self.max_bytes)
                    raise too_large
            return message

        async def answering_send(message: Message) -> None:
            # Whatever the framework makes of the exception raised in the body read
            # (FastAPI turns it into a 400 "error parsing the body"), the answer is 413.
            if too_large is None:
                await send(message)
            elif message["type"] == "http.response.start":
                response = error_response(413, "request_too_large", str(too_large))
                await response(scope, receive, send)

        try:
            await self.app(scope, counting_receive, answering_send)
        except BodyTooLarge:
            await error_response(413, "request_too_large", str(too_large))(scope, receive, send)


class MetricsMiddleware:
    """Counts and times every request by route template (bounded label values)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = scope["app"].state.services if "app" in scope else None
        if scope["type"] != "http" or services is None:
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
            metrics = services.metrics
            metrics.requests.labels(route=route, code=str(code), protocol="http").inc()
            metrics.request_duration.labels(route=route, protocol="http").observe(
                time.perf_counter() - started
            )
