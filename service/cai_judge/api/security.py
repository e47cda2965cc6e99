"""API keys (stored as sha256 digests, compared in constant time) and per-key rate limits."""

from __future__ import annotations

import hashlib
import hmac
import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyChecker:
    """Deny by default once any key is configured; no keys configured means open."""

    def __init__(self, key_hashes: list[str]) -> None:
        self._digests = [bytes.fromhex(h.strip().lower()) for h in key_hashes]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def identify(self, presented: str | None) -> str | None:
        """The matching key's digest prefix (a safe rate-limit identity), or None."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        matched = None
        # Compare against every key, always, so timing reveals neither which nor whether.
        for known in self._digests:
            if hmac.compare_digest(digest, known):
                matched = known.hex()[:16]
        return matched


class RateLimiter:
    """A moving-window limit per identity, from the `limits` library."""

    def __init__(self, rate: str) -> None:
        self._item = parse(rate)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, identity: str) -> float | None:
        """None when allowed; else seconds until the window lets the next request in."""
        if self._limiter.hit(self._item, identity):
            return None
        reset_at, _ = self._limiter.get_window_stats(self._item, identity)
        return max(1.0, math.ceil(reset_at - time.time()))
