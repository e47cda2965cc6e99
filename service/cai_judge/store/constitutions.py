"""Constitution versions in Redis, shared by every replica (DESIGN.md §1, §5).

This is the Redis half of the shared registry: raw canonical JSON by id and version, the
order versions were added in, each id's latest version, and the reserved ids. Parsing,
memoizing and the fallback to what a replica has seen stay in the domain
(`labeling.constitution.SharedConstitutionRegistry`), which reads this through a protocol,
so the store never imports the domain.

The registry's interface is synchronous (the Judge, the CLI and the services all read it),
so this uses redis-py's blocking client with sub-second timeouts; the services call it
from a worker thread, never on the event loop. Every failure is StoreUnavailable.
"""

from __future__ import annotations

from typing import Any, Literal

import redis

from cai_judge.store import keys
from cai_judge.store.errors import raises_store_unavailable

# Short: a registry read falls back to memory when Redis is down, and must not hold a
# request for long before it does.
TIMEOUT_S = 0.5

# Adds one version atomically: refuses a reserved id, never overwrites a stored version,
# and appends it to the id's ordered version list only the first time it is stored.
_ADD_SCRIPT = """
if ARGV[4] == '0' and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return -1 end
if ARGV[4] == '1' then redis.call('SADD', KEYS[1], ARGV[1]) end
local added = redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])
if added == 1 then redis.call('RPUSH', KEYS[3], ARGV[2]) end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[1])
return added
"""

AddOutcome = Literal["added", "exists", "reserved"]


@raises_store_unavailable
class RedisConstitutionStore:
    """Stored versions never change; only "which version is latest" moves."""

    def __init__(self, client: Any) -> None:
        self._redis = client  # replies are bytes (no decoding); the stubs say bytes | str
        self._add_script = client.register_script(_ADD_SCRIPT)

    @classmethod
    def connect(cls, url: str) -> RedisConstitutionStore:
        """A client on its own pool; nothing is contacted until the first call."""
        return cls(redis.Redis.from_url(url, socket_timeout=TIMEOUT_S,
                                        socket_connect_timeout=TIMEOUT_S))  # fmt: skip

    def close(self) -> None:
        self._redis.close()

    def add(
        self, constitution_id: str, version: str, canonical_json: str, *, reserve: bool
    ) -> AddOutcome:
        """Store a version and make it the latest; `reserve` marks the id as loaded at
        start-up. "reserved": the id is reserved and `reserve` is false (nothing stored)."""
        outcome = int(
            self._add_script(
                keys=[
                    keys.CONSTITUTION_RESERVED,
                    keys.constitution_versions(constitution_id),
                    keys.constitution_order(constitution_id),
                    keys.CONSTITUTION_LATEST,
                    keys.CONSTITUTION_IDS,
                ],
                args=[constitution_id, version, canonical_json, "1" if reserve else "0"],
            )
        )
        return {-1: "reserved", 0: "exists", 1: "added"}[outcome]  # type: ignore[return-value]

    def is_reserved(self, constitution_id: str) -> bool:
        return bool(self._redis.sismember(keys.CONSTITUTION_RESERVED, constitution_id))

    def ids(self) -> set[str]:
        return {member.decode() for member in self._redis.smembers(keys.CONSTITUTION_IDS)}

    def versions(self, constitution_id: str) -> list[str]:
        """The id's versions in the order they were first stored."""
        order = self._redis.lrange(keys.constitution_order(constitution_id), 0, -1)
        return [version.decode() for version in order]

    def latest(self, constitution_id: str) -> str | None:
        raw = self._redis.hget(keys.CONSTITUTION_LATEST, constitution_id)
        return None if raw is None else str(raw.decode())

    def get(self, constitution_id: str, version: str) -> str | None:
        """One version's canonical JSON, or None when it was never stored."""
        raw = self._redis.hget(keys.constitution_versions(constitution_id), version)
        return None if raw is None else str(raw.decode())
