"""The compiled-module cache that tasks load their modules through."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import wasmtime

from ..errors import ConfigError, ModuleError
from ..settings import CacheSettings
from .compiler import compile_module
from .digest import DigestMemo, read_module_file
from .index import CacheIndex, Entry, make_policy
from .precache import find_modules, validate_pre_cache
from .store import (
    Artifact,
    ArtifactStore,
    CorruptArtifactError,
    EntryError,
    unlink_quietly,
)

logger = logging.getLogger(__name__)

# After a failed write (full, read-only or forbidden cache directory), loads
# compile in memory for this long before a write is tried again.
_WRITE_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was created."""

    hits: int = 0  # loads served from memory or a stored file
    misses: int = 0  # loads that found no stored file (compiled, or waited)
    compiles: int = 0  # modules compiled
    stores: int = 0  # compiled modules written to disk
    evictions: int = 0  # entries removed by the policy to respect `size`
    expirations: int = 0  # entries removed `entryTTL` seconds after storing
    entries: int = 0  # entries resident now


class ModuleCache:
    """Compiled modules on disk, keyed by the SHA-256 of the module bytes.

    Resident entries keep their `wasmtime.Module` in memory, so a hit in the
    same process touches no cache file. A stored file is read only on the first
    hit after a restart, and then its bytes are checked against their checksum
    and deserialized in memory, never mapped. Changing or truncating a cache
    file therefore cannot reach a loaded module.

    Thread-safe: tasks call `load` from worker threads. One lock guards the
    index, the counters and the table of compiles in progress. Hashing,
    compiling, checksums and deserializing run outside it.

    NOTE: the index lives in one process. Two plugin processes that share a
    directory each keep up to `size` files and may delete each other's files,
    which then costs a compile but no error.
    """

    def __init__(
        self,
        engine: wasmtime.Engine,
        engine_fingerprint: str,
        settings: CacheSettings,
        cache_dir: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._digests = DigestMemo()
        self._store = ArtifactStore(cache_dir, engine_fingerprint)
        ttl = settings.expiration.entry_ttl if settings.expiration.enabled else None
        try:
            policy = make_policy(settings.type, settings.size)
        except ValueError as err:
            raise ConfigError(f"invalid cache settings: {err}") from err
        self._index = CacheIndex(policy, ttl)
        self._compiling: dict[str, Future[wasmtime.Module]] = {}
        self._counts = dict.fromkeys(
            ("hits", "misses", "compiles", "stores", "evictions", "expirations"), 0
        )
        self._prepared = False
        self._write_retry_at: float | None = None  # set while writes are failing
        self._closed = False
        if settings.enabled:
            self._open_store()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def directory(self) -> Path:
        """The directory of this engine's compiled modules."""
        return self._store.directory

    def load(self, path: Path) -> wasmtime.Module:
        """Return the compiled module in the file `path`.

        Raises ModuleError naming the path when the file cannot be read or is
        not a valid WebAssembly binary. Loads of the same bytes may return the
        same Module object, so callers must not close it.
        """
        self._check_open()
        if not self._settings.enabled:
            data, _ = read_module_file(path)
            self._count("misses")
            return self._compile(data, path)
        digest = self._digests.lookup(path)
        if digest is not None:
            module = self._load_stored(digest, path)
            if module is not None:
                return module
        data, digest = self._digests.read(path)
        return self._load_or_compile(digest, data, path)

    def precompile(self) -> int:
        """Compile every `*.wasm` under `cache.preCache.modulesDir`.

        Returns the number of modules compiled or found stored. Does nothing
        when pre-compiling or the cache is disabled. Raises ConfigError when
        the directory is missing or contains more modules than `cache.size`. An
        invalid module is logged and skipped, because it only fails the tasks
        that use it.
        """
        self._check_open()
        validate_pre_cache(self._settings)
        modules_dir = self._settings.pre_cache.modules_dir
        if not (self._settings.enabled and self._settings.pre_cache.enabled):
            return 0
        assert modules_dir is not None  # validate_pre_cache checked it
        count = 0
        for path in find_modules(modules_dir):
            try:
                self.load(path)
            except ModuleError as err:
                logger.warning(
                    "failed to pre-compile module: %s",
                    err,
                    extra={"module_path": str(path), "error": str(err)},
                )
                continue
            count += 1
        return count

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(**self._counts, entries=len(self._index))

    def close(self) -> None:
        """Stop serving loads. Stored files stay for the next plugin process.

        Modules already returned stay valid. Calling close again does nothing.
        """
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("module cache is closed: create a new ModuleCache")

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def _open_store(self) -> None:
        try:
            self._store.prepare()
            artifacts = self._store.scan()
        except OSError as err:
            self._write_failed(err)
            return
        self._prepared = True
        self._restore(artifacts)

    def _restore(self, artifacts: list[Artifact]) -> None:
        """Index the files an earlier plugin process stored, oldest first.

        File ages come from their mtime, so entries past `entryTTL` go, and
        beyond `size` the oldest go.
        """
        now, wall_now = self._clock(), time.time()
        ttl = self._settings.expiration.entry_ttl
        expiring = self._settings.expiration.enabled
        aged = [
            (artifact, max(wall_now - artifact.mtime, 0.0)) for artifact in artifacts
        ]
        live = [(a, age) for a, age in aged if not (expiring and age >= ttl)]
        expired = [Entry(a, None) for a, age in aged if expiring and age >= ttl]
        excess = max(len(live) - self._settings.size, 0)
        with self._lock:
            self._remove_files_locked(expired, "expirations")
            self._remove_files_locked(
                [Entry(a, None) for a, _ in live[:excess]], "evictions"
            )
            for artifact, age in live[excess:]:
                self._index.add(Entry(artifact, None), now - age)
        logger.debug(
            "indexed %d compiled modules in %s", len(live) - excess, self.directory
        )

    def _load_stored(self, digest: str, path: Path) -> wasmtime.Module | None:
        """Return the stored module `digest`, or None when it is not stored."""
        with self._lock:
            self._remove_files_locked(self._index.expire(self._clock()), "expirations")
            entry = self._index.lookup(digest)
            module = None if entry is None else entry.module
            if module is not None:
                self._counts["hits"] += 1
        if entry is None:
            return None
        if module is None:
            module = self._deserialize(entry)
            if module is None:
                return None
        logger.debug("cache hit for module %s", path, extra=_log_fields(path, digest))
        return module

    def _deserialize(self, entry: Entry) -> wasmtime.Module | None:
        """Load the file of `entry`, which this process has not loaded yet.

        Returns None after removing an entry whose file is unusable. Two threads
        may both deserialize the file, and the first to finish keeps its module.
        """
        try:
            data = self._store.read_verified(entry.artifact)
            module = wasmtime.Module.deserialize(self._engine, data)
        except (OSError, CorruptArtifactError, wasmtime.WasmtimeError) as err:
            self._drop_unusable(entry, err)
            return None
        with self._lock:
            if entry.module is None:
                entry.module = module
            self._counts["hits"] += 1
            return entry.module

    def _drop_unusable(self, entry: Entry, err: Exception) -> None:
        """Remove an entry whose file is missing, corrupted or incompatible.

        Only the first thread to notice removes it. The file is deleted under
        the lock so that it cannot hit a fresh file stored under the same name.
        """
        with self._lock:
            if not self._index.remove(entry):
                return
            self._remove_entry_locked(entry.artifact.path)
        # Another plugin process sharing the directory may have evicted it.
        level = logging.DEBUG if isinstance(err, FileNotFoundError) else logging.WARNING
        logger.log(
            level,
            "removed unusable compiled module %s, compiling again: %s",
            entry.artifact.path,
            err,
            extra={
                **_log_fields(entry.source, entry.artifact.digest),
                "error": str(err),
            },
        )

    def _load_or_compile(self, digest: str, data: bytes, path: Path) -> wasmtime.Module:
        """Return module `digest` from disk, or compile `data` exactly once.

        Threads that miss the same digest at once share one compile.
        """
        while True:
            module = self._load_stored(digest, path)
            if module is not None:
                return module
            with self._lock:
                if digest in self._index:
                    continue  # stored by another thread since the lookup
                future = self._compiling.get(digest)
                owner = future is None
                if future is None:
                    future = self._compiling[digest] = Future()
                self._counts["misses"] += 1
            logger.debug(
                "cache miss for module %s", path, extra=_log_fields(path, digest)
            )
            if owner:
                return self._compile_and_store(digest, data, path, future)
            return _wait_for(future)

    def _compile_and_store(
        self,
        digest: str,
        data: bytes,
        path: Path,
        future: Future[wasmtime.Module],
    ) -> wasmtime.Module:
        try:
            module = self._compile(data, path)
            artifact = self._write(digest, module)
        except BaseException as err:
            with self._lock:
                del self._compiling[digest]
            future.set_exception(err)
            raise
        with self._lock:
            # Adding the entry and ending the compile in one step means that a
            # thread that missed finds one or the other, never neither.
            del self._compiling[digest]
            if artifact is not None:
                self._add_locked(Entry(artifact, str(path), module))
        future.set_result(module)
        return module

    def _compile(self, data: bytes, path: Path) -> wasmtime.Module:
        self._count("compiles")
        return compile_module(self._engine, data, path)

    def _remove_entry_locked(self, path: Path) -> None:
        try:
            self._store.remove_entry(path)
        except EntryError as err:
            logger.warning("%s", err, extra={"error": str(err)})

    def _write(self, digest: str, module: wasmtime.Module) -> Artifact | None:
        """Store `module`; returns None when it cannot be stored.

        Only errors of the cache directory itself (OSError from the store)
        switch every module to compiling in memory. An error confined to this
        module's entry is logged and leaves writes of other modules on.
        """
        with self._lock:
            retry_at = self._write_retry_at
        if retry_at is not None and self._clock() < retry_at:
            return None
        try:
            if not self._prepared:
                self._store.prepare()
                self._prepared = True
            artifact = self._store.write(digest, module.serialize())
        except OSError as err:
            self._write_failed(err)
            return None
        except (EntryError, wasmtime.WasmtimeError) as err:
            logger.warning(
                "failed to store compiled module %s, compiled in memory: %s",
                digest,
                err,
                extra={"module_digest": digest, "error": str(err)},
            )
            return None
        if retry_at is not None:
            self._write_recovered()
        return artifact

    def _write_failed(self, err: Exception) -> None:
        """Switch to compiling in memory; warns once until a write succeeds."""
        with self._lock:
            first = self._write_retry_at is None
            self._write_retry_at = self._clock() + _WRITE_RETRY_SECONDS
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "failed to write to module cache %s, compiling modules in memory"
            " and retrying in %.0f s: %s",
            self.directory,
            _WRITE_RETRY_SECONDS,
            err,
            extra={"error": str(err)},
        )

    def _write_recovered(self) -> None:
        with self._lock:
            self._write_retry_at = None
        logger.info("module cache %s is writable again", self.directory)

    def _add_locked(self, entry: Entry) -> None:
        evicted = self._index.add(entry, self._clock())
        self._counts["stores"] += 1
        logger.debug(
            "stored compiled module %s",
            entry.artifact.path,
            extra=_log_fields(entry.source, entry.artifact.digest),
        )
        self._remove_files_locked(evicted, "evictions")

    def _remove_files_locked(self, entries: list[Entry], reason: str) -> None:
        """Delete the files of entries that left the index; `reason` is a counter."""
        for entry in entries:
            unlink_quietly(entry.artifact.path)
            self._counts[reason] += 1
            logger.debug(
                "removed compiled module %s (%s)",
                entry.artifact.path,
                "evicted" if reason == "evictions" else "expired",
                extra=_log_fields(entry.source, entry.artifact.digest),
            )


def _wait_for(future: Future[wasmtime.Module]) -> wasmtime.Module:
    """Return the module another thread compiles, or raise its error."""
    try:
        return future.result()
    except ModuleError as err:
        # A fresh exception per waiter, so threads do not share one traceback.
        raise ModuleError(str(err)) from err


def _log_fields(path: Path | str | None, digest: str) -> dict[str, object]:
    return {"module_path": None if path is None else str(path), "module_digest": digest}
