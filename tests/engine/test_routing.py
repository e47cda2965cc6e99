"""The remote engine's router on its own (engine/routing.py, DESIGN.md §4): consistent
hashing of prefixes over the fleet, bounded loads, health marks, and the fleet setting.

Pure arithmetic on made-up server addresses: no vLLM server is started. What the router does
for real `vllm serve` processes is tests/e2e/test_remote_engine.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cai_judge.engine.routing import NoServerAvailable, PrefixRouter, prefix_hash
from cai_judge.settings import Settings

SERVERS = [f"http://10.0.0.{i}:8000" for i in range(1, 5)]


def keys(count: int) -> list[int]:
    return [prefix_hash([7, i, i * 31 % 600]) for i in range(count)]


def test_adding_a_server_moves_only_its_share():
    before = PrefixRouter(SERVERS[:3])
    after = PrefixRouter(SERVERS)
    moved = [k for k in keys(4000) if before.owner(k) != after.owner(k)]
    # Only keys now owned by the new server move, and about a quarter of them do.
    assert all(after.owner(k) == SERVERS[3] for k in moved)
    assert 0.15 < len(moved) / 4000 < 0.35


def test_routing_is_the_same_on_every_judge_pod():
    one, other = PrefixRouter(SERVERS), PrefixRouter(list(reversed(SERVERS)))
    assert [one.owner(k) for k in keys(500)] == [other.owner(k) for k in keys(500)]


def test_an_unhealthy_server_is_skipped_until_it_recovers():
    router = PrefixRouter(SERVERS)
    owned = [k for k in keys(400) if router.owner(k) == SERVERS[0]]
    router.mark(SERVERS[0], False)
    assert SERVERS[0] not in {router.place(k, 1).server for k in owned}
    router.mark(SERVERS[0], True)
    assert {router.owner(k) for k in owned} == {SERVERS[0]}
    for server in SERVERS:
        router.mark(server, False)
    with pytest.raises(NoServerAvailable, match="no healthy vLLM server"):
        router.place(owned[0], 1)


@given(
    groups=st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=60),
    factor=st.sampled_from([1.0, 1.25, 2.0]),
    floor=st.sampled_from([0, 8, 32]),
)
def test_bounded_loads_cap_every_server(groups: list[int], factor: float, floor: int):
    """Whatever arrives, no server holds more than max(⌈c · mean⌉, floor) in-flight units,
    except a group too large for any share, which goes to the least-loaded server."""
    router = PrefixRouter(SERVERS, load_factor=factor, min_bound=floor)
    for i, units in enumerate(groups):
        capacity = router.capacity(units)
        least = min(router.load(s) for s in SERVERS)
        placement = router.place(prefix_hash([i % 3]), units)  # three hot prefixes
        held = router.load(placement.server)
        assert held <= capacity or held - units == least
    total = sum(groups)
    assert sum(router.load(s) for s in SERVERS) == total


def test_one_hot_prefix_spills_to_the_next_server_on_the_ring():
    router = PrefixRouter(SERVERS[:2], load_factor=1.25, min_bound=0)
    hot = keys(1)[0]
    first = router.place(hot, 8)
    second = router.place(hot, 8)  # would make 16 on one server: over 1.25 × 8
    assert second.server != first.server
    router.finish(first, 8)
    router.finish(second, 8)
    assert router.place(hot, 8).server == first.server  # back home once it is quiet


def test_vllm_urls_setting_takes_commas_or_json(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CAI_JUDGE_VLLM_URLS", "http://a:8000, http://b:8000")
    assert Settings().vllm_urls == ["http://a:8000", "http://b:8000"]
    monkeypatch.setenv("CAI_JUDGE_VLLM_URLS", '["http://a:8000"]')
    assert Settings().vllm_urls == ["http://a:8000"]
