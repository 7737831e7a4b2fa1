"""Bookkeeping of stored modules: which are resident, in what order they go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import wasmtime

from .arc import ARCPolicy
from .expiry import ExpiryQueue
from .policy import EvictionPolicy, FIFOPolicy, LFUPolicy, LRUPolicy
from .store import Artifact

_POLICIES: dict[str, type[EvictionPolicy[Any]]] = {
    "lfu": LFUPolicy,
    "lru": LRUPolicy,
    "arc": ARCPolicy,
    "simple": FIFOPolicy,
}


def make_policy(cache_type: str, capacity: int) -> EvictionPolicy[Any]:
    """Return the policy for a `cache.type` value; raises ValueError if unknown.

    The policy takes keys of any hashable type.
    """
    try:
        policy = _POLICIES[cache_type]
    except KeyError:
        known = ", ".join(_POLICIES)
        raise ValueError(
            f"invalid cache type {cache_type!r}: set cache.type to one of {known}"
        ) from None
    return policy(capacity)


@dataclass
class Entry:
    """A resident compiled module."""

    artifact: Artifact
    source: str | None  # module path that stored it; None when found at start
    # The module compiled or deserialized in this process, None until the first
    # load after a restart. It leaves memory with the entry (unless a task
    # still holds it), so `size` bounds both the files and the modules kept.
    module: wasmtime.Module | None = None


class CacheIndex:
    """Resident entries keyed by module digest, with eviction and expiry.

    Not thread-safe: the module cache calls it under its lock.
    """

    def __init__(self, policy: EvictionPolicy[str], ttl: float | None) -> None:
        self._policy = policy
        self._expiry: ExpiryQueue[str] | None = None
        if ttl is not None:
            self._expiry = ExpiryQueue(ttl)
        self._entries: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, digest: object) -> bool:
        return digest in self._entries

    def lookup(self, digest: str) -> Entry | None:
        """Return the entry of `digest` and count a hit on it, or None."""
        entry = self._entries.get(digest)
        if entry is not None:
            self._policy.touch(digest)
        return entry

    def add(self, entry: Entry, stored_at: float) -> list[Entry]:
        """Make `entry` resident; returns the entries evicted to make room."""
        digest = entry.artifact.digest
        evicted: list[Entry] = []
        if digest in self._entries:
            self._policy.touch(digest)
        else:
            evicted = [self._forget(key) for key in self._policy.insert(digest)]
        self._entries[digest] = entry
        if self._expiry is not None:
            self._expiry.add(digest, stored_at)
        return evicted

    def remove(self, entry: Entry) -> bool:
        """Drop `entry` if it is still the resident one for its digest."""
        digest = entry.artifact.digest
        if self._entries.get(digest) is not entry:
            return False
        self._policy.remove(digest)
        self._forget(digest)
        return True

    def expire(self, now: float) -> list[Entry]:
        """Drop and return the entries whose time to live has passed at `now`."""
        if self._expiry is None:
            return []
        expired = self._expiry.pop_expired(now)
        for digest in expired:
            self._policy.remove(digest)
        return [self._entries.pop(digest) for digest in expired]

    def _forget(self, digest: str) -> Entry:
        if self._expiry is not None:
            self._expiry.discard(digest)
        return self._entries.pop(digest)
