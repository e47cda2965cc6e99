"""Where one-sample trainers' samples wait for their group (DESIGN.md §9, group assembly).

OpenRLHF, verl and slime's remote RM send one sample per call, and with several replicas the
samples of one group land on different processes. A group is therefore state every replica
sees: the Redis store below, or, for the embedded default (no CAI_JUDGE_REDIS_URL, one process),
the memory store. Both keep the same protocol, which services/group_rewards.py drives:

- `join` adds a sample to its scope's open group in one atomic step and returns its slot; the
  sample that fills the group closes it in that same step, so later samples open a new group
  and a group never holds more than its size.
- `claim` (SET NX) picks the one caller that judges a group: the sample that filled it, or the
  first waiter whose wait ran out.
- `close` closes the group if it is still open and returns its members, atomically, so the
  judge reads exactly the members that joined before it closed.
- `publish` writes every slot's result at once; `wait_results` waits for them, bounded.

Everything expires (TTL): a replica that dies mid-group leaves nothing behind for long.
Redis, not Redis Cluster: the join script names the members key of a group id it only learns
inside the script (keys.reward_group_members).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from cai_judge.store import keys
from cai_judge.store.errors import raises_store_unavailable


@dataclass(frozen=True, slots=True)
class Joined:
    """Where a sample landed: its group, its slot (0-based, arrival order) and how many
    members the group had once it joined (== size: it filled, and so closed, the group)."""

    group_id: str
    slot: int
    count: int


class GroupStore(Protocol):
    async def join(
        self, scope: str, group_id: str, member: bytes, size: int, ttl_s: int
    ) -> Joined: ...

    async def claim(self, group_id: str, owner: str, ttl_s: int) -> bool: ...

    async def close(self, scope: str, group_id: str) -> list[bytes]: ...

    async def publish(self, group_id: str, results: bytes, ttl_s: int) -> None: ...

    async def wait_results(self, group_id: str, timeout_s: float) -> bytes | None: ...


# KEYS[1]: the scope's open-group pointer. ARGV: a fresh group id (used if none is open), the
# member, the group size, the TTL, the members-key prefix (keys.REWARD_GROUP_PREFIX).
_JOIN = """
local gid = redis.call('GET', KEYS[1])
if not gid then
  gid = ARGV[1]
  redis.call('SET', KEYS[1], gid, 'EX', ARGV[4])
end
local members = ARGV[5] .. gid .. ':members'
local n = redis.call('RPUSH', members, ARGV[2])
redis.call('EXPIRE', members, ARGV[4])
if n >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
end
return {gid, n}
"""

# KEYS[1]: the scope's open-group pointer, KEYS[2]: the group's members. ARGV[1]: the group id.
_CLOSE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return redis.call('LRANGE', KEYS[2], 0, -1)
"""

# A waiter on another replica learns of the results by polling: one GET per waiter, first
# every 20 ms, backing off to 200 ms (a judgement takes far longer than the last step).
_POLL_FIRST_S = 0.02
_POLL_MAX_S = 0.2


@raises_store_unavailable
class RedisGroupStore:
    """Groups in Redis, shared by every replica; same-process waiters wake at once."""

    def __init__(self, redis: Any) -> None:
        self.redis: Any = redis
        self._join = redis.register_script(_JOIN)
        self._close = redis.register_script(_CLOSE)
        self._local: dict[str, tuple[asyncio.Event, int]] = {}

    async def join(self, scope: str, group_id: str, member: bytes, size: int, ttl_s: int) -> Joined:
        gid, count = await self._join(
            keys=[keys.reward_group_open(scope)],
            args=[group_id, member, size, ttl_s, keys.REWARD_GROUP_PREFIX],
        )
        gid = gid.decode() if isinstance(gid, bytes) else str(gid)
        return Joined(gid, int(count) - 1, int(count))

    async def claim(self, group_id: str, owner: str, ttl_s: int) -> bool:
        return bool(
            await self.redis.set(keys.reward_group_judge(group_id), owner, nx=True, ex=ttl_s)
        )

    async def close(self, scope: str, group_id: str) -> list[bytes]:
        members: list[bytes] = await self._close(
            keys=[keys.reward_group_open(scope), keys.reward_group_members(group_id)],
            args=[group_id],
        )
        return list(members)

    async def publish(self, group_id: str, results: bytes, ttl_s: int) -> None:
        await self.redis.set(keys.reward_group_results(group_id), results, ex=ttl_s)
        local = self._local.get(group_id)
        if local is not None:
            local[0].set()

    async def wait_results(self, group_id: str, timeout_s: float) -> bytes | None:
        event, waiters = self._local.get(group_id, (asyncio.Event(), 0))
        self._local[group_id] = (event, waiters + 1)
        deadline = time.monotonic() + max(timeout_s, 0.0)
        pause = _POLL_FIRST_S
        try:
            while True:
                value: bytes | None = await self.redis.get(keys.reward_group_results(group_id))
                left = deadline - time.monotonic()
                if value is not None or left <= 0:
                    return value
                try:
                    await asyncio.wait_for(event.wait(), min(pause, left))
                except TimeoutError:
                    pause = min(pause * 2, _POLL_MAX_S)
        finally:
            # The group's local waiters share one event; the last one out drops it.
            event, waiters = self._local[group_id]
            if waiters <= 1:
                del self._local[group_id]
            else:
                self._local[group_id] = (event, waiters - 1)


@dataclass
class _Group:
    members: list[bytes]
    expires: float
    judge: str | None = None
    results: bytes | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryGroupStore:
    """Groups in this process (the embedded default): the same protocol without a network,
    atomic because no step awaits between its read and its write."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[str, float]] = {}
        self._groups: dict[str, _Group] = {}

    def _prune(self, now: float) -> None:
        for gid in [g for g, group in self._groups.items() if group.expires < now]:
            del self._groups[gid]
        for scope in [s for s, (_, expires) in self._open.items() if expires < now]:
            del self._open[scope]

    async def join(self, scope: str, group_id: str, member: bytes, size: int, ttl_s: int) -> Joined:
        now = time.monotonic()
        self._prune(now)
        opened = self._open.get(scope)
        if opened is None or opened[0] not in self._groups:
            opened = (group_id, now + ttl_s)
            self._open[scope] = opened
            self._groups[group_id] = _Group([], now + ttl_s)
        gid = opened[0]
        group = self._groups[gid]
        group.members.append(member)
        group.expires = now + ttl_s
        count = len(group.members)
        if count >= size:
            del self._open[scope]
        return Joined(gid, count - 1, count)

    async def claim(self, group_id: str, owner: str, ttl_s: int) -> bool:
        group = self._groups.get(group_id)
        if group is None or group.judge is not None:
            return False
        group.judge = owner
        return True

    async def close(self, scope: str, group_id: str) -> list[bytes]:
        opened = self._open.get(scope)
        if opened is not None and opened[0] == group_id:
            del self._open[scope]
        group = self._groups.get(group_id)
        return list(group.members) if group is not None else []

    async def publish(self, group_id: str, results: bytes, ttl_s: int) -> None:
        group = self._groups.get(group_id)
        if group is None:
            return
        group.results = results
        group.expires = time.monotonic() + ttl_s
        group.done.set()

    async def wait_results(self, group_id: str, timeout_s: float) -> bytes | None:
        group = self._groups.get(group_id)
        if group is None:
            return None
        if group.results is None and timeout_s > 0:
            try:
                await asyncio.wait_for(group.done.wait(), timeout_s)
            except TimeoutError:
                return None
        return group.results
