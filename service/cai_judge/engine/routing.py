"""Prefix-affinity routing over a fleet of vLLM servers (DESIGN.md §3, §4): pure, no I/O.

Every score unit that shares a prefix must reach the server that already holds that
prefix in its KV cache, or the fleet recomputes the long prefix on every server it
touches. The key is the part a pair's two orders share (the template and the
conversation, `ScoreUnit.affinity_key`), so both orders' K units, and other pairs on the
same conversation, meet on one server. The router places a whole prefix group at once by
**consistent hashing with bounded loads** (Mirrokni, Thorup and Zadimoghaddam,
"Consistent Hashing with Bounded Loads", SODA 2018):

- each server owns `VIRTUAL_NODES` points on a hash ring; a group goes to the first
  server clockwise from the hash of its prefix, so adding or removing a server moves only
  the groups that hash to its arcs (about 1/n of them), and the rest keep their caches;
- a server whose in-flight units would exceed `load_factor` × the mean (counting the new
  group; never less than `min_bound`) is passed over for the next one on the ring, so one
  hot conversation, or a skewed ring, cannot pile everything onto one server; with factor
  c no server holds more than max(⌈c · mean⌉, min_bound), and a group moves only when its
  owner is that far ahead;
- a server marked unhealthy is skipped until it is marked healthy again.

How this differs from the routers that inspired it, and why. They all route opaque
requests and have to *guess* which part of a prompt is shared:

- SGLang's router (`cache_aware`) keeps an approximate radix tree of the text it sent to
  each worker, routes to the worker with the longest match if the match ratio is above
  `cache_threshold`, and switches to shortest-queue whenever the load is imbalanced
  (max − min above `balance_abs_threshold` and max above `balance_rel_threshold` × min);
  the tree needs eviction to track what the workers really keep.
- vLLM production-stack's `prefixaware` router hashes the request text in fixed
  character chunks into a trie per endpoint and picks, at random, among the endpoints
  with the longest chunk match; load does not enter the choice.
- The Gateway API Inference Extension's prefix-cache scorer hashes the prompt in blocks,
  keeps an LRU index of the block hashes it sent to each pod, and scores pods by the
  share of leading blocks they probably hold; the scheduler weighs that score against
  queue-depth and KV-utilisation scorers.

cai-judge knows the shared prefix *exactly* before it routes: the template puts
everything a (pair, order) shares first, pads it to whole KV blocks, and the Judge hands
the engine each unit's `prefix_length`, and the length its pair's two orders share
(`affinity_length`, DESIGN.md §3). So there is nothing to guess and
no tree or index to keep in step with the servers' caches: the hash of the exact prefix
tokens names the server, the same on every judge pod with the same server list (pods
route alike without sharing state), and the prefix's followers are sent only after its
leader, so they find it cached. What remains of the cache-vs-load trade-off is the one
knob `load_factor`; a prefix that lands on a busy server moves to the next on the ring,
deterministically, so its followers still meet it there.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

VIRTUAL_NODES = 128


class NoServerAvailable(RuntimeError):
    """Every server of the fleet is marked unhealthy (or none is configured)."""


def _point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def prefix_hash(token_ids: Sequence[int]) -> int:
    """A ring position for an exact token prefix: stable across processes and hosts
    (never Python's salted `hash`), so every judge pod routes a prefix alike."""
    return _point(struct.pack(f"<{len(token_ids)}I", *token_ids))


@dataclass(eq=False)
class Placement:
    """Where one prefix group runs, and how many of its units are still in flight there."""

    key: int
    server: str
    outstanding: int


@dataclass
class PrefixRouter:
    """Consistent hashing with bounded loads over server names (URLs).

    Loads are units in flight, counted from placement until each unit finishes
    (`finish`), so a group's followers count against its server before they are sent.
    """

    servers: list[str] = field(default_factory=list)
    load_factor: float = 1.25
    # In-flight units any server may hold whatever the mean: below this it is not hot, it
    # is filling its batch. Without it an idle fleet would split one pair's two orders
    # (4 + 4 units is over 1.25 × the mean of 8 on two servers) for no gain.
    min_bound: int = 32
    _ring: list[tuple[int, str]] = field(default_factory=list, init=False)
    _points: list[int] = field(default_factory=list, init=False)
    _load: dict[str, int] = field(default_factory=dict, init=False)
    _healthy: dict[str, bool] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.load_factor < 1:
            raise ValueError(f"load_factor must be at least 1 (got {self.load_factor})")
        initial, self.servers = list(dict.fromkeys(self.servers)), []
        self.set_servers(initial)

    # -- membership and health -------------------------------------------------------

    def set_servers(self, servers: Iterable[str]) -> None:
        """Replace the fleet; servers that stay keep their load and health."""
        wanted = list(dict.fromkeys(servers))
        for gone in set(self.servers) - set(wanted):
            self._healthy.pop(gone, None)
        for new in wanted:
            self._healthy.setdefault(new, True)
            self._load.setdefault(new, 0)
        self.servers = wanted
        self._ring = sorted(
            (_point(f"{server}#{replica}".encode()), server)
            for server in wanted
            for replica in range(VIRTUAL_NODES)
        )
        self._points = [point for point, _ in self._ring]

    def mark(self, server: str, healthy: bool) -> None:
        if server in self._healthy:
            self._healthy[server] = healthy

    def is_healthy(self, server: str) -> bool:
        return self._healthy.get(server, False)

    @property
    def healthy_servers(self) -> list[str]:
        return [s for s in self.servers if self._healthy.get(s)]

    def load(self, server: str) -> int:
        return self._load.get(server, 0)

    # -- placement -------------------------------------------------------------------

    def capacity(self, units: int) -> int:
        """The most in-flight units one healthy server may hold once `units` more arrive:
        `load_factor` × the mean, or `min_bound` if that is more."""
        healthy = len(self.healthy_servers)
        if healthy == 0:
            return 0
        in_flight = sum(self._load.get(s, 0) for s in self.healthy_servers)
        return max(self.min_bound, math.ceil(self.load_factor * (in_flight + units) / healthy))

    def owner(self, key: int, exclude: Iterable[str] = ()) -> str:
        """The first healthy server clockwise from `key`, ignoring load."""
        return self._walk(key, units=0, exclude=set(exclude), bounded=False)

    def place(self, key: int, units: int, exclude: Iterable[str] = ()) -> Placement:
        """Put a group of `units` sharing the prefix `key` on one server, and count them."""
        server = self._walk(key, units, set(exclude), bounded=True)
        self._load[server] = self._load.get(server, 0) + units
        return Placement(key, server, units)

    def place_on(self, server: str, key: int, units: int) -> Placement:
        """Count `units` on a server chosen elsewhere (the round-robin baseline)."""
        self._load[server] = self._load.get(server, 0) + units
        return Placement(key, server, units)

    def finish(self, placement: Placement, units: int = 1) -> None:
        """`units` of a placement are done (scored or failed for good)."""
        units = min(units, placement.outstanding)
        placement.outstanding -= units
        self._load[placement.server] = max(0, self._load.get(placement.server, 0) - units)

    def move(self, placement: Placement, exclude: Iterable[str] = ()) -> None:
        """Re-place a group's outstanding units after its server failed them."""
        left = placement.outstanding
        self.finish(placement, left)
        moved = self.place(placement.key, left, exclude=exclude)
        placement.server, placement.outstanding = moved.server, moved.outstanding

    def _walk(self, key: int, units: int, exclude: set[str], bounded: bool) -> str:
        candidates = [s for s in self.healthy_servers if s not in exclude]
        if not candidates:
            raise NoServerAvailable(
                f"no healthy vLLM server among {len(self.servers)} "
                f"({', '.join(self.servers) or 'none configured'})"
            )
        limit = self.capacity(units) if bounded else math.inf
        start = bisect.bisect_left(self._points, key) % len(self._ring)
        seen: set[str] = set()
        for step in range(len(self._ring)):
            server = self._ring[(start + step) % len(self._ring)][1]
            if server in seen or server not in candidates:
                continue
            seen.add(server)
            if self._load.get(server, 0) + units <= limit:
                return server
            if len(seen) == len(candidates):
                break
        # A group larger than any server's share (one pair of many principles on a
        # quiet fleet): the least-loaded candidate, ties to ring order.
        order = {server: i for i, server in enumerate(seen)}
        return min(candidates, key=lambda s: (self._load.get(s, 0), order.get(s, 0)))


@dataclass
class RoundRobin:
    """Servers in turn, one unit at a time: what a plain Kubernetes Service or an L4 load
    balancer does. The baseline that `bench/fleet_routing.py` measures affinity against;
    never the default."""

    _next: int = 0

    def pick(self, healthy: Sequence[str]) -> str:
        if not healthy:
            raise NoServerAvailable("no healthy vLLM server")
        server = healthy[self._next % len(healthy)]
        self._next += 1
        return server
