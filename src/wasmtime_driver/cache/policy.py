"""Eviction policies over plain keys: which entries a bounded cache keeps.

Every policy implements the same four calls in O(1): `touch` on a hit, `insert`
on a miss (returning the keys it evicted to make room), `remove` for entries
that leave for other reasons (expiry, a corrupted file) and `in`. The policies
know nothing about files or wasmtime, so the benchmark drives them with plain
integers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any, ClassVar, Generic, TypeVar

import cachetools

K = TypeVar("K", bound=Hashable)


class EvictionPolicy(ABC, Generic[K]):
    """A set of at most `capacity` resident keys and the rule that evicts them."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(
                f"invalid cache size {capacity!r}: set cache.size to at least 1"
            )
        self.capacity = capacity

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def touch(self, key: K) -> None:
        """Record a hit on the resident `key`."""

    @abstractmethod
    def insert(self, key: K) -> list[K]:
        """Add the non-resident `key` and return the keys evicted to make room."""

    @abstractmethod
    def remove(self, key: K) -> None:
        """Drop the resident `key` without counting it as an eviction."""

    def access(self, key: K) -> bool:
        """Request `key` as a cache would: touch it on a hit, insert it on a miss.

        Returns True on a hit.
        """
        if key in self:
            self.touch(key)
            return True
        self.insert(key)
        return False


class _RecordingCache(cachetools.Cache[K, None]):
    """A cachetools cache that remembers which keys its `popitem` evicted.

    cachetools evicts by calling `popitem` from `__setitem__` until the new key
    fits, so overriding it is the documented hook for eviction callbacks.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.evicted: list[K] = []

    def popitem(self) -> tuple[K, None]:
        item = super().popitem()
        self.evicted.append(item[0])
        return item


class _RecordingLFU(_RecordingCache[K], cachetools.LFUCache[K, None]):
    pass


class _RecordingLRU(_RecordingCache[K], cachetools.LRUCache[K, None]):
    pass


class _RecordingFIFO(_RecordingCache[K], cachetools.FIFOCache[K, None]):
    pass


class _CachetoolsPolicy(EvictionPolicy[K]):
    """A policy backed by one of cachetools' bounded caches.

    cachetools 8 keeps LRU and FIFO order in an OrderedDict and LFU counts in a
    linked list of frequency buckets, so lookup, touch, insert and evict are
    all O(1).
    """

    _cache_class: ClassVar[type[_RecordingCache[Any]]]

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._cache: _RecordingCache[K] = self._cache_class(capacity)

    def __contains__(self, key: object) -> bool:
        return key in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    def touch(self, key: K) -> None:
        # Reading the item is how cachetools updates recency and frequency.
        self._cache[key]

    def insert(self, key: K) -> list[K]:
        self._cache.evicted.clear()
        self._cache[key] = None
        return list(self._cache.evicted)

    def remove(self, key: K) -> None:
        del self._cache[key]


class LFUPolicy(_CachetoolsPolicy[K]):
    """Least frequently used; ties go to the key that reached its count first."""

    _cache_class = _RecordingLFU


class LRUPolicy(_CachetoolsPolicy[K]):
    """Least recently used."""

    _cache_class = _RecordingLRU


class FIFOPolicy(_CachetoolsPolicy[K]):
    """The `simple` type: no recency or frequency, the oldest stored key goes.

    cachetools' FIFOCache does not reorder on reads, so a touch changes nothing.
    """

    _cache_class = _RecordingFIFO
