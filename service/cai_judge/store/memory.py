"""The embedded default (DESIGN.md §5): state in this process only.

Not durable and not shared: a restart forgets it and another replica never sees it. It
keeps `cai-judge serve` runnable with no server beside it; set CAI_JUDGE_REDIS_URL for the
shared cache, the shared constitution registry and batch jobs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence


class MemoryUnitCache:
    """A bounded LRU of score units; entries also expire after their TTL, as in Redis."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        values: list[bytes | None] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is None or entry[0] < now:
                self._entries.pop(key, None)
                values.append(None)
                continue
            self._entries.move_to_end(key)
            values.append(entry[1])
        return values

    async def set_many(self, items: Mapping[str, bytes], ttl_s: int) -> None:
        if self.max_entries == 0:
            return
        expires = time.monotonic() + ttl_s
        for key, value in items.items():
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()
