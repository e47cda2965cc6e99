"""One redis-py asyncio connection pool per process (DESIGN.md §5).

Short socket timeouts: the label cache must fail open within 50 ms, and a Redis that is
down should cost a refused connection, not a hung request. Jobs retry on their own terms
(the consumer backs off; a submission answers 503).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError

from cai_judge.settings import Settings

__all__ = ["RedisError", "RedisUnitCache", "connect"]

SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 1.0


def connect(settings: Settings, url: str | None = None) -> Redis:
    """A client on a fresh pool for `url` (default: CAI_JUDGE_REDIS_URL); nothing is
    contacted until the first command."""
    url = url or settings.redis_url
    if not url:
        raise ValueError("CAI_JUDGE_REDIS_URL is not set")
    pool = ConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=30,
        # After a Redis restart every pooled connection is stale: reconnect and retry
        # once or twice rather than fail the first request on each of them.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        retry_on_error=[ConnectionError],
    )
    return Redis(connection_pool=pool)


class RedisUnitCache:
    """The label cache in Redis: MGET to read, one pipelined SET EX per unit to write."""

    def __init__(self, redis: Redis) -> None:
        self.redis: Any = redis  # replies are bytes (no decoding); the stubs say bytes | str

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values: list[bytes | None] = await self.redis.mget(list(keys))
        return values

    async def set_many(self, items: Mapping[str, bytes], ttl_s: int) -> None:
        if not items:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, value, ex=ttl_s)
            await pipe.execute()

    async def close(self) -> None:
        """The pool belongs to whoever made the client (the container closes it)."""
