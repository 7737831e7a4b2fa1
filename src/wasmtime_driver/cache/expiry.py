"""Expiry of cache entries a fixed number of seconds after they were stored."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class ExpiryQueue(Generic[K]):
    """Keys in the order they expire, each `ttl` seconds after it was stored.

    cachetools' TTLCache ties expiry to LRU order and TLRUCache keeps a heap
    (O(log n)), so neither fits the other policies. With one TTL for every
    entry, storing order is expiry order and an OrderedDict gives O(1) adds
    and removals and amortised O(1) expiry.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._expires_at: OrderedDict[K, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expires_at)

    def add(self, key: K, stored_at: float) -> None:
        """Start (or restart) the clock of `key` at `stored_at`.

        Callers add keys in the order they were stored, which keeps the queue
        sorted by expiry time.
        """
        self._expires_at.pop(key, None)
        self._expires_at[key] = stored_at + self.ttl

    def discard(self, key: K) -> None:
        self._expires_at.pop(key, None)

    def pop_expired(self, now: float) -> list[K]:
        """Remove and return the keys whose time is up at `now`."""
        expired: list[K] = []
        while self._expires_at:
            key, expires_at = next(iter(self._expires_at.items()))
            if expires_at > now:
                break
            del self._expires_at[key]
            expired.append(key)
        return expired
