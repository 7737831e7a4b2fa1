"""Eviction policies on plain keys: published eviction orders and invariants."""

from __future__ import annotations

import random

import pytest

from wasmtime_driver.cache import (
    ARCPolicy,
    EvictionPolicy,
    FIFOPolicy,
    LFUPolicy,
    LRUPolicy,
    make_policy,
)
from wasmtime_driver.cache.expiry import ExpiryQueue

POLICY_TYPES = ["lfu", "lru", "arc", "simple"]


def fill(policy: EvictionPolicy[str], keys: str) -> list[str]:
    """Access each key in turn; return everything evicted."""
    evicted: list[str] = []
    for key in keys:
        if key in policy:
            policy.touch(key)
        else:
            evicted += policy.insert(key)
    return evicted


def test_lru_evicts_least_recently_used() -> None:
    policy: LRUPolicy[str] = LRUPolicy(3)
    assert fill(policy, "abca") == []
    assert policy.insert("d") == ["b"]
    assert policy.insert("e") == ["c"]
    assert sorted(k for k in "abcde" if k in policy) == ["a", "d", "e"]


def test_lfu_evicts_least_frequently_used() -> None:
    policy: LFUPolicy[str] = LFUPolicy(3)
    # a is used 3 times, b twice, c once.
    assert fill(policy, "abcaab") == []
    assert policy.insert("d") == ["c"]
    # LFU's known weakness: the newest key has the lowest count and goes next.
    assert policy.insert("e") == ["d"]
    assert "a" in policy
    assert "b" in policy


def test_lfu_breaks_ties_by_first_to_reach_count() -> None:
    policy: LFUPolicy[str] = LFUPolicy(3)
    fill(policy, "abcba")  # b reaches count 2 before a, c stays at 1
    assert policy.insert("d") == ["c"]
    assert policy.insert("e") == ["d"]
    policy.touch("e")  # e, b and a now all have count 2, e got there last
    assert policy.insert("f") == ["b"]


def test_fifo_ignores_hits() -> None:
    policy: FIFOPolicy[str] = FIFOPolicy(3)
    assert fill(policy, "abcaaa") == []
    assert policy.insert("d") == ["a"]
    assert fill(policy, "bbbe") == ["b"]
    assert [k for k in "abcde" if k in policy] == ["c", "d", "e"]


def arc_state(arc: ARCPolicy[str]) -> tuple[str, str, str, str, float]:
    return (
        "".join(arc.t1),
        "".join(arc.t2),
        "".join(arc.b1),
        "".join(arc.b2),
        arc.p,
    )


# Hand-traced from the ARC(c) algorithm in figure 4 of Megiddo and Modha,
# "ARC: A Self-Tuning, Low Overhead Replacement Cache" (FAST 2003), with c = 2.
# Each row: requested key, keys evicted from the cache, then T1, T2, B1, B2
# (LRU end first) and the target p after the request.
ARC_TRACE = [
    ("a", "", "a", "", "", "", 0.0),  # case IV.B, cache not full
    ("a", "", "", "a", "", "", 0.0),  # case I: hit in T1 moves to T2
    ("b", "", "b", "a", "", "", 0.0),
    ("c", "b", "c", "a", "b", "", 0.0),  # IV.B: REPLACE takes T1's LRU as |T1| > p
    ("b", "a", "c", "b", "", "a", 1.0),  # II: ghost hit in B1, p += 1, T2's LRU goes
    ("a", "c", "", "ba", "c", "", 0.0),  # III: ghost hit in B2, p -= 1, T1's LRU goes
    ("d", "b", "d", "a", "c", "b", 0.0),  # IV.B: T1 empty, so T2's LRU goes
    ("c", "a", "d", "c", "", "ba", 1.0),  # II again: p back to 1
    ("e", "c", "de", "", "", "ac", 1.0),  # IV.B with 2c keys: B2's LRU b forgotten
    ("a", "d", "e", "a", "d", "c", 0.0),  # III: p falls to 0, T1's LRU goes
]


def test_arc_follows_hand_traced_sequence() -> None:
    arc: ARCPolicy[str] = ARCPolicy(2)
    for step, (key, evicted, t1, t2, b1, b2, p) in enumerate(ARC_TRACE):
        if key in arc:
            arc.touch(key)
            got_evicted = ""
        else:
            got_evicted = "".join(arc.insert(key))
        assert got_evicted == evicted, f"step {step} ({key})"
        assert arc_state(arc) == (t1, t2, b1, b2, p), f"step {step} ({key})"


def test_arc_b1_hit_grows_p_by_ghost_ratio() -> None:
    # With |B1| < |B2|, a hit in B1 grows p by |B2| / |B1| instead of 1.
    arc: ARCPolicy[str] = ARCPolicy(4)
    arc.t2.update(dict.fromkeys("wxyz"))
    arc.b1.update(dict.fromkeys("a"))
    arc.b2.update(dict.fromkeys("bc"))
    assert arc.insert("a") == ["w"]  # T1 is empty, so T2's LRU goes
    assert arc.p == 2.0
    assert arc_state(arc) == ("", "xyza", "", "bcw", 2.0)


def test_arc_b2_hit_shrinks_p_by_ghost_ratio() -> None:
    # With |B2| < |B1|, a hit in B2 shrinks p by |B1| / |B2| instead of 1.
    arc: ARCPolicy[str] = ARCPolicy(4)
    arc.p = 3.0
    arc.t1.update(dict.fromkeys("w"))
    arc.t2.update(dict.fromkeys("xyz"))
    arc.b1.update(dict.fromkeys("ad"))
    arc.b2.update(dict.fromkeys("b"))
    # b came from B2 and |T1| = p = 1, so REPLACE takes T1's LRU.
    assert arc.insert("b") == ["w"]
    assert arc_state(arc) == ("", "xyzb", "adw", "", 1.0)


def test_arc_resists_scan_where_lru_does_not() -> None:
    hot = [f"hot{i}" for i in range(3)]
    scan = [f"scan{i}" for i in range(10)]
    arc: ARCPolicy[str] = ARCPolicy(4)
    lru: LRUPolicy[str] = LRUPolicy(4)
    for policy in (arc, lru):
        for key in hot * 3:
            policy.access(key)
        for key in scan:
            policy.access(key)
    assert all(key in arc for key in hot)
    assert not any(key in lru for key in hot)


@pytest.mark.parametrize("cache_type", POLICY_TYPES)
def test_policy_never_exceeds_capacity(cache_type: str) -> None:
    rng = random.Random(7)
    policy = make_policy(cache_type, 5)
    resident: set[str] = set()
    for _ in range(5000):
        key = f"k{rng.randrange(20)}"
        if rng.random() < 0.05 and key in policy:
            policy.remove(key)
            resident.discard(key)
        elif key in policy:
            policy.touch(key)
        else:
            evicted = policy.insert(key)
            assert key not in evicted
            resident -= set(evicted)
            resident.add(key)
        assert len(policy) <= 5
        assert len(policy) == len(resident)
        assert all(k in policy for k in resident)


def test_arc_keeps_list_invariants() -> None:
    rng = random.Random(11)
    arc: ARCPolicy[int] = ARCPolicy(8)
    for _ in range(20000):
        arc.access(int(rng.paretovariate(1.2)) % 64)
        assert len(arc.t1) + len(arc.b1) <= 8
        assert len(arc.t1) + len(arc.t2) + len(arc.b1) + len(arc.b2) <= 16
        assert 0.0 <= arc.p <= 8.0


@pytest.mark.parametrize("cache_type", POLICY_TYPES)
def test_policy_remove_frees_slot(cache_type: str) -> None:
    policy = make_policy(cache_type, 2)
    fill(policy, "ab")
    policy.remove("a")
    assert "a" not in policy
    assert policy.insert("c") == []
    assert len(policy) == 2


@pytest.mark.parametrize("cache_type", POLICY_TYPES)
def test_policy_access_reports_hits(cache_type: str) -> None:
    policy = make_policy(cache_type, 2)
    assert policy.access("a") is False
    assert policy.access("a") is True


@pytest.mark.parametrize("capacity", [0, -1])
def test_policy_invalid_capacity(capacity: int) -> None:
    with pytest.raises(
        ValueError, match=f"invalid cache size {capacity}: set cache.size to at least 1"
    ):
        make_policy("lru", capacity)


def test_make_policy_unknown_type() -> None:
    with pytest.raises(
        ValueError,
        match="invalid cache type 'mru': set cache.type to one of lfu, lru, arc, simple",
    ):
        make_policy("mru", 3)


def test_expiry_queue_pops_in_storing_order() -> None:
    queue: ExpiryQueue[str] = ExpiryQueue(10.0)
    queue.add("a", 0.0)
    queue.add("b", 1.0)
    queue.add("c", 2.0)
    queue.add("a", 3.0)  # stored again: its clock restarts
    assert queue.pop_expired(10.9) == []
    assert queue.pop_expired(11.0) == ["b"]
    queue.discard("c")
    assert queue.pop_expired(100.0) == ["a"]
    assert len(queue) == 0
