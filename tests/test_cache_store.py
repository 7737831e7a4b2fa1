"""ModuleCache with real wasmtime and real files: hits, policies, TTL, restarts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import wasmtime
from test_cache_support import (
    FakeClock,
    age_file,
    cache_files,
    cache_settings,
    call_f,
    write_module,
)

from wasmtime_driver.cache import ModuleCache, digest
from wasmtime_driver.cache.store import FileStamp
from wasmtime_driver.errors import ConfigError, ModuleError

FINGERPRINT = "wasmtime 50.0.1 test-engine"


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


def test_module_cache_hit_after_store(engine: wasmtime.Engine, tmp_path: Path) -> None:
    module_path = write_module(tmp_path / "a.wasm", 1001)
    with ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c") as cache:
        assert call_f(engine, cache.load(module_path)) == 1001
        assert call_f(engine, cache.load(module_path)) == 1001
        stats = cache.stats()
        assert (stats.hits, stats.misses, stats.compiles, stats.stores) == (1, 1, 1, 1)
        assert stats.entries == 1
        assert len(cache_files(cache.directory)) == 1


def test_module_cache_same_bytes_other_path_hits(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    first = write_module(tmp_path / "one" / "m.wasm", 1002)
    second = write_module(tmp_path / "two" / "renamed.wasm", 1002)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    cache.load(first)
    assert call_f(engine, cache.load(second)) == 1002
    assert cache.stats().hits == 1
    assert cache.stats().compiles == 1


@pytest.mark.parametrize("replace", [True, False], ids=["rename", "in-place"])
def test_module_cache_changed_module_not_stale(
    engine: wasmtime.Engine, tmp_path: Path, replace: bool
) -> None:
    module_path = write_module(tmp_path / "m.wasm", 1003)
    age_file(module_path, 60)  # old enough for its digest to be memoized
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    assert call_f(engine, cache.load(module_path)) == 1003
    size = module_path.stat().st_size
    if replace:
        write_module(tmp_path / "new.wasm", 1004).replace(module_path)
    else:
        write_module(module_path, 1004)
    assert module_path.stat().st_size == size
    assert call_f(engine, cache.load(module_path)) == 1004
    assert cache.stats().compiles == 2


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every module file the cache reads."""
    reads: list[Path] = []
    real_read = digest.read_module_file

    def counting_read(path: Path) -> tuple[bytes, FileStamp | None]:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(digest, "read_module_file", counting_read)
    return reads


def test_module_cache_unchanged_module_not_reread(
    engine: wasmtime.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_path = write_module(tmp_path / "m.wasm", 1005)
    age_file(module_path, 60)
    reads = count_reads(monkeypatch)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    for _ in range(3):
        assert call_f(engine, cache.load(module_path)) == 1005
    assert reads == [module_path]


def test_module_cache_fresh_module_rehashed(
    engine: wasmtime.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file modified in the last two seconds could change again with the
    # same mtime, so its digest is not trusted and it is read every time.
    module_path = write_module(tmp_path / "m.wasm", 1006)
    reads = count_reads(monkeypatch)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    cache.load(module_path)
    cache.load(module_path)
    assert len(reads) == 2
    assert cache.stats().hits == 1


@pytest.mark.parametrize(
    ("cache_type", "kept"),
    [("lru", {1, 3}), ("lfu", {1, 3}), ("arc", {1, 3}), ("simple", {2, 3})],
)
def test_module_cache_policy_evicts_files(
    engine: wasmtime.Engine, tmp_path: Path, cache_type: str, kept: set[int]
) -> None:
    paths = {n: write_module(tmp_path / f"{n}.wasm", 1000 + n) for n in (1, 2, 3)}
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(cache_type, 2), tmp_path)
    for n in (1, 2, 1, 3):
        cache.load(paths[n])
    assert cache.stats().evictions == 1
    assert cache.stats().entries == 2
    assert len(cache_files(cache.directory)) == 2
    before = cache.stats().hits
    for n in sorted(kept):
        cache.load(paths[n])
    assert cache.stats().hits == before + 2


def test_module_cache_size_never_exceeded(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    cache = ModuleCache(engine, FINGERPRINT, cache_settings("simple", 3), tmp_path)
    for n in range(8):
        cache.load(write_module(tmp_path / f"{n}.wasm", 1000 + n))
        assert cache.stats().entries <= 3
        assert len(cache_files(cache.directory)) <= 3
    assert cache.stats().evictions == 5


def test_module_cache_entry_expires_after_ttl(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    clock = FakeClock()
    module_path = write_module(tmp_path / "m.wasm", 1007)
    settings = cache_settings(ttl=10.0)
    cache = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c", clock=clock)
    cache.load(module_path)
    clock.now += 9.9
    cache.load(module_path)  # a hit does not restart the clock
    assert cache.stats().hits == 1
    clock.now += 0.1
    assert call_f(engine, cache.load(module_path)) == 1007
    stats = cache.stats()
    assert (stats.expirations, stats.compiles, stats.hits) == (1, 2, 1)
    assert len(cache_files(cache.directory)) == 1


def test_module_cache_expiration_disabled_keeps_entries(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    clock = FakeClock()
    module_path = write_module(tmp_path / "m.wasm", 1008)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path, clock=clock)
    cache.load(module_path)
    clock.now += 1e9
    cache.load(module_path)
    assert cache.stats().hits == 1
    assert cache.stats().expirations == 0


def test_module_cache_restart_reuses_files(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    paths = [write_module(tmp_path / f"{n}.wasm", 1000 + n) for n in range(3)]
    first = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    for path in paths:
        first.load(path)
    first.close()
    second = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    assert second.stats().entries == 3
    for n, path in enumerate(paths):
        assert call_f(engine, second.load(path)) == 1000 + n
    assert second.stats().hits == 3
    assert second.stats().compiles == 0


def test_module_cache_restart_respects_size(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    paths = [write_module(tmp_path / f"{n}.wasm", 1000 + n) for n in range(4)]
    first = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    for path in paths:
        first.load(path)
    # Make file age the reverse of load order: module 0 is the newest.
    for n, path in enumerate(paths):
        module_digest = digest.DigestMemo().read(path)[1]
        (artifact,) = first.directory.glob(f"{module_digest}-*.cwasm")
        age_file(artifact, 100 * n)
    second = ModuleCache(engine, FINGERPRINT, cache_settings(size=2), tmp_path / "c")
    assert second.stats().evictions == 2
    assert len(cache_files(second.directory)) == 2
    second.load(paths[0])
    second.load(paths[1])
    assert second.stats().hits == 2


def test_module_cache_restart_drops_expired_files(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    old, new = (write_module(tmp_path / f"{n}.wasm", 1000 + n) for n in range(2))
    first = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    first.load(old)
    for artifact in cache_files(first.directory):
        age_file(artifact, 700)
    first.load(new)
    clock = FakeClock()
    settings = cache_settings(ttl=600.0)
    second = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c", clock=clock)
    assert second.stats().expirations == 1
    assert second.stats().entries == 1
    assert len(cache_files(second.directory)) == 1
    # The surviving entry keeps its age: it expires 600 s after it was stored.
    clock.now += 599
    second.load(new)
    assert second.stats().hits == 1
    clock.now += 1
    second.load(new)
    assert second.stats().expirations == 2


def test_module_cache_other_fingerprint_separate(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    module_path = write_module(tmp_path / "m.wasm", 1009)
    first = ModuleCache(engine, "engine-a", cache_settings(), tmp_path / "c")
    first.load(module_path)
    second = ModuleCache(engine, "engine-b", cache_settings(), tmp_path / "c")
    second.load(module_path)
    assert second.stats().hits == 0
    assert second.stats().compiles == 1
    assert first.directory != second.directory
    assert (second.directory / "fingerprint").read_text() == "engine-b"


def test_module_cache_disabled_writes_nothing(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    module_path = write_module(tmp_path / "m.wasm", 1010)
    settings = cache_settings(enabled=False)
    cache = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c")
    assert call_f(engine, cache.load(module_path)) == 1010
    assert call_f(engine, cache.load(module_path)) == 1010
    assert not (tmp_path / "c").exists()
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.compiles, stats.stores) == (0, 2, 2, 0)


def test_module_cache_missing_module(engine: wasmtime.Engine, tmp_path: Path) -> None:
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    missing = tmp_path / "missing.wasm"
    with pytest.raises(ModuleError, match=r"failed to read module '.*missing\.wasm'"):
        cache.load(missing)


def test_module_cache_invalid_module(engine: wasmtime.Engine, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0\x01\x05garbage")
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    with pytest.raises(ModuleError, match=r"failed to compile module '.*bad\.wasm': "):
        cache.load(bad)
    assert cache.stats().stores == 0
    assert cache_files(cache.directory) == []


def test_module_cache_invalid_settings(engine: wasmtime.Engine, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid cache settings: invalid cache type"):
        ModuleCache(engine, FINGERPRINT, cache_settings("mru"), tmp_path)
    with pytest.raises(
        ConfigError, match="invalid cache settings: invalid cache size 0"
    ):
        ModuleCache(engine, FINGERPRINT, cache_settings(size=0), tmp_path)


def test_module_cache_closed_rejects_load(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    module_path = write_module(tmp_path / "m.wasm", 1011)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    module = cache.load(module_path)
    cache.close()
    cache.close()
    assert call_f(engine, module) == 1011
    with pytest.raises(RuntimeError, match="module cache is closed"):
        cache.load(module_path)


def test_module_cache_logs_events_with_fields(
    engine: wasmtime.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wasmtime_driver.cache")
    clock = FakeClock()
    paths = [write_module(tmp_path / f"{n}.wasm", 1000 + n) for n in range(3)]
    settings = cache_settings(size=1, ttl=10.0)
    cache = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c", clock=clock)
    cache.load(paths[0])  # miss, store
    cache.load(paths[0])  # hit
    cache.load(paths[1])  # miss, store, evict paths[0]
    clock.now += 10
    cache.load(paths[2])  # expire paths[1], miss, store
    messages = [r.getMessage().split(" ")[0:3] for r in caplog.records]
    events = [" ".join(words) for words in messages]
    assert events.count("cache miss for") == 3
    assert events.count("cache hit for") == 1
    assert events.count("stored compiled module") == 3
    removed = [r.getMessage() for r in caplog.records if "(evicted)" in r.getMessage()]
    assert len(removed) == 1
    expired = [r for r in caplog.records if "(expired)" in r.getMessage()]
    assert len(expired) == 1
    assert expired[0].__dict__["module_path"] == str(paths[1])
    for record in caplog.records:
        if record.getMessage().startswith(("cache hit", "cache miss")):
            assert record.__dict__["module_path"] in {str(p) for p in paths}
            assert len(record.__dict__["module_digest"]) == 64


def test_module_cache_empty_module(engine: wasmtime.Engine, tmp_path: Path) -> None:
    empty = tmp_path / "empty.wasm"
    empty.write_bytes(b"")
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    with pytest.raises(ModuleError, match=r"^module file '.*empty\.wasm' is empty$"):
        cache.load(empty)
    assert cache_files(cache.directory) == []


SECRET_TEXT = "root:$6$salt$hash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


@pytest.mark.parametrize("enabled", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize(
    "content",
    [SECRET_TEXT, '(module (func (export "f") (result i32) i32.const 7))'],
    ids=["text-file", "wat"],
)
def test_module_cache_text_file_rejected(
    engine: wasmtime.Engine, tmp_path: Path, content: str, enabled: bool
) -> None:
    text_file = tmp_path / "shadow"
    text_file.write_text(content)
    settings = cache_settings(enabled=enabled)
    cache = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c")
    with pytest.raises(ModuleError) as raised:
        cache.load(text_file)
    message = str(raised.value)
    assert message.startswith(f"module file {str(text_file)!r} is not a WebAssembly")
    assert "\\0asm magic bytes" in message
    assert "WebAssembly text (.wat) must be compiled to .wasm first" in message
    for line in content.splitlines():
        assert line not in message
    assert content[:6] not in message
    assert cache.stats().stores == 0


def test_module_cache_text_file_never_compiled(
    engine: wasmtime.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[bytes] = []
    real_module = wasmtime.Module

    def recording_module(engine: wasmtime.Engine, data: bytes) -> wasmtime.Module:
        compiled.append(data)
        return real_module(engine, data)

    monkeypatch.setattr(wasmtime, "Module", recording_module)
    text_file = tmp_path / "m.wasm"
    text_file.write_text("(module)")
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    with pytest.raises(ModuleError, match="is not a WebAssembly binary"):
        cache.load(text_file)
    assert compiled == []
