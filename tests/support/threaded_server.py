"""The app on a real uvicorn server in a thread of the test process, on a free loopback port:
for tests that need real HTTP between real clients and several replicas, on the fake engine
(no engine start, so milliseconds, not the 30 s of a `cai-judge serve` subprocess)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from cai_judge.testing.ports import free_port


@contextlib.contextmanager
def threaded_server(app: FastAPI, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """`with threaded_server(app) as url`: the app served (its lifespan run) until the block
    ends; its own event loop lives in the server's thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the threaded server on port {port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
