"""ModuleCache with oversized files and non-files: module files and cache
entries are checked by fstat before their content is read, and one bad entry
does not stop other modules from being stored."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime
from test_cache_support import (
    cache_files,
    cache_settings,
    call_f,
    module_bytes,
    write_module,
)

from wasmtime_driver.cache import ModuleCache
from wasmtime_driver.cache.digest import read_module_file
from wasmtime_driver.cache.limits import (
    MAX_ARTIFACT_BYTES,
    MAX_MODULE_BYTES,
    read_bounded,
)
from wasmtime_driver.cache.store import ArtifactStore, EntryError
from wasmtime_driver.errors import ModuleError
from wasmtime_driver.settings import CacheSettings, PreCacheSettings

FINGERPRINT = "wasmtime 50.0.1 test-engine"
GIB = 1024**3
# Small modules are read whole, then read_bounded requests one step of 1 MiB
# to find the end of the file. Any larger request means a large file was read.
SMALL_READ = 1024 * 1024


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


@pytest.fixture
def read_requests(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the byte count of every os.read and os.pread call."""
    requests: list[int] = []
    real_read, real_pread = os.read, os.pread

    def counting_read(fd: int, count: int) -> bytes:
        requests.append(count)
        return real_read(fd, count)

    def counting_pread(fd: int, count: int, offset: int) -> bytes:
        requests.append(count)
        return real_pread(fd, count, offset)

    monkeypatch.setattr(os, "read", counting_read)
    monkeypatch.setattr(os, "pread", counting_pread)
    return requests


def sparse_file(path: Path, head: bytes, size: int) -> Path:
    """Write `head` and extend the file to `size` bytes without using disk."""
    path.write_bytes(head)
    os.truncate(path, size)
    return path


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def entry_path(engine: wasmtime.Engine, cache: ModuleCache, value: int) -> Path:
    """Return the cache entry path that module `value` will be stored at."""
    data = module_bytes(value)
    compiled = wasmtime.Module(engine, data).serialize()
    digest = hashlib.sha256(data).hexdigest()
    checksum = hashlib.sha256(compiled).hexdigest()
    return cache.directory / f"{digest}-{checksum}.cwasm"


def test_max_module_bytes_below_artifact_limit() -> None:
    assert MAX_MODULE_BYTES == 512 * 1024 * 1024
    assert MAX_ARTIFACT_BYTES > MAX_MODULE_BYTES


def test_read_module_file_large_text_rejected_unread(
    tmp_path: Path, read_requests: list[int]
) -> None:
    path = sparse_file(tmp_path / "big.wat", b"(module)\n", 2 * GIB)
    with pytest.raises(ModuleError, match="is not a WebAssembly binary"):
        read_module_file(path)
    assert read_requests
    assert max(read_requests) <= 8


def test_read_module_file_oversized_wasm_rejected_unread(
    tmp_path: Path, read_requests: list[int]
) -> None:
    path = sparse_file(tmp_path / "big.wasm", b"\0asm\x01\0\0\0", 3 * GIB)
    with pytest.raises(ModuleError) as raised:
        read_module_file(path)
    message = str(raised.value)
    assert str(path) in message
    assert f"{3 * GIB} bytes" in message
    assert f"limit of {MAX_MODULE_BYTES} bytes" in message
    assert max(read_requests) <= 8


def test_read_module_file_at_limit_checked_then_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the limit lowered, a file of exactly the limit is read and one byte
    # more is rejected.
    from wasmtime_driver.cache import digest

    data = module_bytes(1)
    monkeypatch.setattr(digest, "MAX_MODULE_BYTES", len(data))
    path = tmp_path / "m.wasm"
    path.write_bytes(data)
    assert read_module_file(path)[0] == data
    path.write_bytes(data + b"\0")
    with pytest.raises(ModuleError, match=f"{len(data) + 1} bytes exceeds"):
        read_module_file(path)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_read_module_file_not_regular(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "m.wasm"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)  # a blocking open would hang here
    with pytest.raises(ModuleError, match=r"'.*m\.wasm' is not a regular file"):
        read_module_file(path)


def test_read_bounded_grown_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert len(read_bounded(fd, 10, 1000)) == 100
        os.lseek(fd, 0, os.SEEK_SET)
        assert len(read_bounded(fd, 10, 50)) == 51
        os.lseek(fd, 0, os.SEEK_SET)
        assert len(read_bounded(fd, 100, 100)) == 100
    finally:
        os.close(fd)


def test_module_cache_oversized_module_rejected(
    engine: wasmtime.Engine, tmp_path: Path, read_requests: list[int]
) -> None:
    path = sparse_file(tmp_path / "big.wasm", b"\0asm\x01\0\0\0", 3 * GIB)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    with pytest.raises(ModuleError, match="is too large"):
        cache.load(path)
    assert max(read_requests) <= 8
    assert cache.stats().compiles == 0


def test_precompile_skips_oversized_module(
    engine: wasmtime.Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    read_requests: list[int],
) -> None:
    modules_dir = tmp_path / "modules"
    write_module(modules_dir / "good.wasm", 7)
    sparse_file(modules_dir / "big.wasm", b"\0asm\x01\0\0\0", 3 * GIB)
    base = cache_settings()
    settings = CacheSettings(
        enabled=True,
        type=base.type,
        size=base.size,
        expiration=base.expiration,
        pre_cache=PreCacheSettings(enabled=True, modules_dir=modules_dir),
    )
    cache = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c")
    assert cache.precompile() == 1
    (warning,) = warnings_of(caplog)
    assert "big.wasm" in warning
    assert "is too large" in warning
    assert max(read_requests) <= SMALL_READ


def stored_cache(
    engine: wasmtime.Engine, tmp_path: Path, value: int
) -> tuple[Path, Path]:
    """Store module `value` and return its module path and cache file."""
    module_path = write_module(tmp_path / f"{value}.wasm", value)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    cache.load(module_path)
    (artifact,) = cache_files(cache.directory)
    return module_path, artifact


def test_module_cache_oversized_file_recompiled_unread(
    engine: wasmtime.Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    read_requests: list[int],
) -> None:
    module_path, artifact = stored_cache(engine, tmp_path, 1200)
    good_size = artifact.stat().st_size
    os.truncate(artifact, 3 * MAX_ARTIFACT_BYTES // 2)
    read_requests.clear()
    restarted = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    assert call_f(engine, restarted.load(module_path)) == 1200
    assert restarted.stats().compiles == 1
    assert artifact.stat().st_size == good_size
    assert max(read_requests) <= SMALL_READ
    assert any("exceeds the limit" in m for m in warnings_of(caplog))


def test_module_cache_symlink_file_recompiled_unread(
    engine: wasmtime.Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    read_requests: list[int],
) -> None:
    module_path, artifact = stored_cache(engine, tmp_path, 1201)
    target = sparse_file(tmp_path / "big.cwasm", artifact.read_bytes(), 3 * GIB)
    artifact.unlink()
    artifact.symlink_to(target)
    read_requests.clear()
    restarted = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    assert call_f(engine, restarted.load(module_path)) == 1201
    assert restarted.stats().compiles == 1
    assert not artifact.is_symlink()
    assert artifact.is_file()
    assert target.stat().st_size == 3 * GIB
    assert max(read_requests) <= SMALL_READ
    assert any("not a regular file" in m for m in warnings_of(caplog))


def make_directory(path: Path) -> None:
    path.mkdir()
    (path / "inner").mkdir()
    (path / "inner" / "file").write_bytes(b"x")


def make_self_link(path: Path) -> None:
    path.symlink_to(path.name)


@pytest.mark.parametrize(
    "make_blocker", [make_directory, make_self_link], ids=["directory", "self-link"]
)
def test_module_cache_non_file_entry_replaced_on_write(
    engine: wasmtime.Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    make_blocker: Callable[[Path], None],
) -> None:
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    blocked = entry_path(engine, cache, 1210)
    make_blocker(blocked)
    module_path = write_module(tmp_path / "a.wasm", 1210)
    other_path = write_module(tmp_path / "b.wasm", 1211)
    assert call_f(engine, cache.load(module_path)) == 1210
    assert call_f(engine, cache.load(other_path)) == 1211
    assert cache.stats().stores == 2
    assert blocked.is_file()
    assert not blocked.is_symlink()
    assert not any("compiling modules in memory" in m for m in warnings_of(caplog))


@pytest.mark.parametrize(
    "make_blocker", [make_directory, make_self_link], ids=["directory", "self-link"]
)
def test_module_cache_scan_removes_non_file_entry(
    engine: wasmtime.Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    make_blocker: Callable[[Path], None],
) -> None:
    module_path, _ = stored_cache(engine, tmp_path, 1220)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    blocked = entry_path(engine, cache, 1221)
    make_blocker(blocked)
    restarted = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    assert restarted.stats().entries == 1
    assert call_f(engine, restarted.load(module_path)) == 1220
    assert restarted.stats().hits == 1
    assert not os.path.lexists(blocked)
    assert any(str(blocked) in m for m in warnings_of(caplog))


def test_module_cache_entry_failure_keeps_other_writes(
    engine: wasmtime.Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An entry that cannot be removed fails only the module stored there.
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    blocked = entry_path(engine, cache, 1230)
    make_directory(blocked)

    def fail_remove(store: ArtifactStore, path: Path) -> None:
        raise EntryError(f"failed to remove {str(path)!r}: test")

    monkeypatch.setattr(ArtifactStore, "remove_entry", fail_remove)
    module_path = write_module(tmp_path / "a.wasm", 1230)
    other_path = write_module(tmp_path / "b.wasm", 1231)
    assert call_f(engine, cache.load(module_path)) == 1230
    assert call_f(engine, cache.load(other_path)) == 1231
    assert cache.stats().stores == 1
    stored = [p for p in cache_files(cache.directory) if p.is_file()]
    assert len(stored) == 1
    assert blocked.is_dir()
    warnings = warnings_of(caplog)
    assert any(str(blocked) in m for m in warnings)
    assert not any("compiling modules in memory" in m for m in warnings)


def test_artifact_store_remove_entry_outside_rejected(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "c", FINGERPRINT)
    store.prepare()
    outside = tmp_path / f"{'a' * 64}-{'b' * 64}.cwasm"
    make_directory(outside)
    with pytest.raises(EntryError, match="not a cache entry"):
        store.remove_entry(outside)
    with pytest.raises(EntryError, match="not a cache entry"):
        store.remove_entry(store.directory / "fingerprint")
    assert outside.is_dir()
    assert (store.directory / "fingerprint").is_file()
