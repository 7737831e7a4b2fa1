"""Compiled-module cache: content-addressed files on disk and the policy that
decides which of them stay.

    module_cache  ModuleCache, the API tasks and the driver use
    store         files on disk, written atomically, checked by checksum
    compiler      the WebAssembly binary check and the compile call
    digest        module digests memoized by file stat
    index         resident entries with their eviction policy and expiry
    policy, arc   the eviction policies (lfu, lru, simple, arc) over plain keys
    expiry        entry time to live
    precache      cache.preCache checks and module discovery
    location      the default cache directory
"""

from __future__ import annotations

from .arc import ARCPolicy
from .index import make_policy
from .location import CACHE_DIR_ENV, default_cache_dir, resolve_cache_dir
from .module_cache import CacheStats, ModuleCache
from .policy import EvictionPolicy, FIFOPolicy, LFUPolicy, LRUPolicy
from .precache import find_modules, validate_pre_cache

__all__ = [
    "CACHE_DIR_ENV",
    "ARCPolicy",
    "CacheStats",
    "EvictionPolicy",
    "FIFOPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "ModuleCache",
    "default_cache_dir",
    "find_modules",
    "make_policy",
    "resolve_cache_dir",
    "validate_pre_cache",
]
