"""Adaptive replacement cache (ARC) as an eviction policy.

Source: Nimrod Megiddo and Dharmendra S. Modha, "ARC: A Self-Tuning, Low
Overhead Replacement Cache", USENIX FAST 2003, figure 4. cachetools has no
ARC, so it is written here.

Resident keys live in T1 (seen once recently) and T2 (seen at least twice).
The ghost lists B1 and B2 remember keys recently evicted from T1 and T2, and a
hit on a ghost moves the target size `p` of T1 towards the list that would
have kept the key. Each list is an OrderedDict with its LRU end first, so
every step is O(1).
"""

from __future__ import annotations

from collections import OrderedDict

from .policy import EvictionPolicy, K


class ARCPolicy(EvictionPolicy[K]):
    """ARC with capacity `c`: at most c resident keys and c ghosts per side."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.p = 0.0  # target size of T1, between 0 and capacity
        self.t1: OrderedDict[K, None] = OrderedDict()
        self.t2: OrderedDict[K, None] = OrderedDict()
        self.b1: OrderedDict[K, None] = OrderedDict()
        self.b2: OrderedDict[K, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self.t1 or key in self.t2

    def __len__(self) -> int:
        return len(self.t1) + len(self.t2)

    def touch(self, key: K) -> None:
        # Case I: a hit in T1 or T2 moves the key to the MRU end of T2.
        if key in self.t1:
            del self.t1[key]
        else:
            self.t2.move_to_end(key)
        self.t2[key] = None

    def insert(self, key: K) -> list[K]:
        if key in self.b1:
            return self._insert_from_b1(key)
        if key in self.b2:
            return self._insert_from_b2(key)
        return self._insert_new(key)

    def remove(self, key: K) -> None:
        # An entry that expires or is found corrupted leaves without becoming a
        # ghost, because no replacement decision caused its departure.
        if key in self.t1:
            del self.t1[key]
        else:
            del self.t2[key]

    def _insert_from_b1(self, key: K) -> list[K]:
        # Case II: B1 is the list that would have kept the key, so grow T1.
        delta = 1.0 if len(self.b1) >= len(self.b2) else len(self.b2) / len(self.b1)
        self.p = min(self.p + delta, float(self.capacity))
        evicted = self._replace(in_b2=False)
        del self.b1[key]
        self.t2[key] = None
        return evicted

    def _insert_from_b2(self, key: K) -> list[K]:
        # Case III: B2 would have kept the key, so shrink T1.
        delta = 1.0 if len(self.b2) >= len(self.b1) else len(self.b1) / len(self.b2)
        self.p = max(self.p - delta, 0.0)
        evicted = self._replace(in_b2=True)
        del self.b2[key]
        self.t2[key] = None
        return evicted

    def _insert_new(self, key: K) -> list[K]:
        # Case IV: a key in none of the four lists.
        c = self.capacity
        evicted: list[K] = []
        if len(self.t1) + len(self.b1) == c:
            if len(self.t1) < c:
                self.b1.popitem(last=False)
                evicted = self._replace(in_b2=False)
            else:
                evicted = [self.t1.popitem(last=False)[0]]
        else:
            total = len(self) + len(self.b1) + len(self.b2)
            if total >= c:
                if total == 2 * c:
                    self.b2.popitem(last=False)
                evicted = self._replace(in_b2=False)
        self.t1[key] = None
        return evicted

    def _replace(self, in_b2: bool) -> list[K]:
        """Evict one resident key into its ghost list if the cache is full.

        The paper's cache is always full once ghosts exist. Here `remove` can
        free a slot, and then nothing needs to go.
        """
        if len(self) < self.capacity:
            return []
        t1_size = len(self.t1)
        from_t1 = t1_size >= 1 and ((in_b2 and t1_size == self.p) or t1_size > self.p)
        if from_t1 or not self.t2:
            key = self.t1.popitem(last=False)[0]
            self.b1[key] = None
        else:
            key = self.t2.popitem(last=False)[0]
            self.b2[key] = None
        return [key]
