"""API keys and per-key rate limits, for every transport (DESIGN.md §6).

Keys are stored as sha256 digests and compared in constant time; a key itself is never
stored or logged. Admin keys (a separate list) may also change the constitution registry.
The transports only extract the presented key (an HTTP header, gRPC metadata) and call
`Authenticator.authenticate`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from cai_judge.services.errors import RateLimited, Unauthenticated


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a safe identity for rate limits and logs, and what it may do."""

    identity: str
    is_admin: bool


def _digests(hex_digests: Iterable[str]) -> list[bytes]:
    return [bytes.fromhex(h.strip().lower()) for h in hex_digests if h.strip()]


class Authenticator:
    """Deny by default once any key is configured; no keys configured means open."""

    def __init__(self, key_hashes: Iterable[str], admin_key_hashes: Iterable[str] = ()) -> None:
        self._admin = _digests(admin_key_hashes)
        # An admin key is also an ordinary key.
        self._all = _digests(key_hashes) + self._admin

    @property
    def enabled(self) -> bool:
        return bool(self._all)

    def _match(self, presented: str, known: list[bytes]) -> bytes | None:
        digest = hashlib.sha256(presented.encode()).digest()
        matched = None
        # Compare against every key, always, so timing reveals neither which nor whether.
        for candidate in known:
            if hmac.compare_digest(digest, candidate):
                matched = candidate
        return matched

    def authenticate(self, presented: str | None, anonymous_identity: str) -> Caller:
        """The caller behind `presented`; `anonymous_identity` (a client address) when open."""
        if not self.enabled:
            return Caller(identity=anonymous_identity, is_admin=True)
        matched = self._match(presented, self._all) if presented else None
        if matched is None:
            raise Unauthenticated("missing or invalid API key", param="authorization")
        # The digest's prefix identifies the key for rate limits without revealing it.
        return Caller(identity=matched.hex()[:16], is_admin=matched in self._admin)


class RateLimiter:
    """A moving-window limit per identity, from the `limits` library."""

    def __init__(self, rate: str) -> None:
        self.rate = rate
        self._item = parse(rate)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def wait_s(self, identity: str) -> float | None:
        """None when allowed (and counted); else seconds until the window admits another."""
        if self._limiter.hit(self._item, identity):
            return None
        reset_at, _ = self._limiter.get_window_stats(self._item, identity)
        return max(1.0, math.ceil(reset_at - time.time()))

    def check(self, identity: str) -> None:
        wait = self.wait_s(identity)
        if wait is not None:
            raise RateLimited(f"rate limit of {self.rate} exceeded", retry_after_s=int(wait))
