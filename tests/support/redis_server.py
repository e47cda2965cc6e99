"""The tests' redis-server fixtures: one per session, emptied for each test that asks for
`redis_url`. The server itself is cai_judge/testing/redis_server.py (benchmarks start it too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cai_judge.testing.redis_server import REDIS_SERVER, RedisServer

__all__ = ["REDIS_SERVER", "RedisServer", "redis_server", "redis_url"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is missing: run scripts/setup.sh (Debian's redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.client().flushall()
    return redis_server.url
