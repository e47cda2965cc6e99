"""One free loopback port for a test's or a benchmark's own server (redis-server, vLLM,
`cai-judge serve`): everything they start listens on 127.0.0.1 only."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
