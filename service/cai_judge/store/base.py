"""What the label cache needs from a store, whichever holds it (memory or Redis)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class UnitCacheStore(Protocol):
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set_many(self, items: Mapping[str, bytes], ttl_s: int) -> None: ...

    async def close(self) -> None: ...
