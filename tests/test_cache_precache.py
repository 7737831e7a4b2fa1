"""Pre-compiling `cache.preCache.modulesDir`, its checks and the cache location."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import wasmtime
from test_cache_support import cache_files, cache_settings, call_f, write_module

from wasmtime_driver.cache import (
    CACHE_DIR_ENV,
    ModuleCache,
    default_cache_dir,
    find_modules,
    resolve_cache_dir,
    validate_pre_cache,
)
from wasmtime_driver.errors import ConfigError
from wasmtime_driver.settings import CacheSettings, PreCacheSettings

FINGERPRINT = "wasmtime 50.0.1 test-engine"


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


def pre_cache_settings(
    modules_dir: Path | None, size: int = 5, enabled: bool = True
) -> CacheSettings:
    base = cache_settings(size=size)
    return CacheSettings(
        enabled=base.enabled,
        type=base.type,
        size=base.size,
        expiration=base.expiration,
        pre_cache=PreCacheSettings(enabled=enabled, modules_dir=modules_dir),
    )


def make_modules_dir(root: Path) -> Path:
    write_module(root / "a.wasm", 1201)
    write_module(root / "nested" / "b.wasm", 1202)
    write_module(root / "nested" / "deeper" / "c.wasm", 1203)
    (root / "nested" / "notes.txt").write_text("not a module")
    return root


def test_find_modules_recursive(tmp_path: Path) -> None:
    modules_dir = make_modules_dir(tmp_path / "modules")
    found = [p.relative_to(modules_dir).as_posix() for p in find_modules(modules_dir)]
    assert found == ["a.wasm", "nested/b.wasm", "nested/deeper/c.wasm"]


def test_find_modules_skips_directory_links(tmp_path: Path) -> None:
    modules_dir = make_modules_dir(tmp_path / "modules")
    (modules_dir / "nested" / "loop").symlink_to(modules_dir)
    assert len(find_modules(modules_dir)) == 3


def test_precompile_compiles_every_module(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    modules_dir = make_modules_dir(tmp_path / "modules")
    settings = pre_cache_settings(modules_dir)
    cache = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c")
    assert cache.precompile() == 3
    assert len(cache_files(cache.directory)) == 3
    # A task naming the same bytes by another path is a hit.
    elsewhere = write_module(tmp_path / "task" / "main.wasm", 1202)
    assert call_f(engine, cache.load(elsewhere)) == 1202
    assert cache.stats().hits == 1
    assert cache.stats().compiles == 3


def test_precompile_again_uses_stored_files(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    modules_dir = make_modules_dir(tmp_path / "modules")
    settings = pre_cache_settings(modules_dir)
    ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c").precompile()
    restarted = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c")
    assert restarted.precompile() == 3
    assert restarted.stats().compiles == 0
    assert restarted.stats().hits == 3


def test_precompile_skips_invalid_module(
    engine: wasmtime.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    modules_dir = make_modules_dir(tmp_path / "modules")
    (modules_dir / "broken.wasm").write_bytes(b"not wasm")
    cache = ModuleCache(engine, FINGERPRINT, pre_cache_settings(modules_dir), tmp_path)
    assert cache.precompile() == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "broken.wasm" in warnings[0]
    assert "is not a WebAssembly binary" in warnings[0]
    assert "not wasm" not in warnings[0]
    assert len(cache_files(cache.directory)) == 3


def test_precompile_disabled_does_nothing(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    modules_dir = make_modules_dir(tmp_path / "modules")
    settings = pre_cache_settings(modules_dir, enabled=False)
    cache = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c")
    assert cache.precompile() == 0
    assert cache_files(cache.directory) == []


def test_precompile_cache_disabled_does_nothing(
    engine: wasmtime.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    modules_dir = make_modules_dir(tmp_path / "modules")
    base = pre_cache_settings(modules_dir)
    settings = CacheSettings(enabled=False, pre_cache=base.pre_cache)
    cache = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c")
    assert cache.precompile() == 0
    assert cache.stats().compiles == 0
    assert not (tmp_path / "c").exists()
    assert "cache.preCache is ignored" in caplog.text


def test_precompile_missing_dir(engine: wasmtime.Engine, tmp_path: Path) -> None:
    settings = pre_cache_settings(tmp_path / "absent")
    cache = ModuleCache(engine, FINGERPRINT, settings, tmp_path / "c")
    with pytest.raises(ConfigError, match=r"modulesDir '.*absent' does not exist"):
        cache.precompile()


def test_validate_pre_cache_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^cache\.preCache\.modulesDir '.*absent' does not exist: set it to an",
    ):
        validate_pre_cache(pre_cache_settings(tmp_path / "absent"))


def test_validate_pre_cache_not_a_directory(tmp_path: Path) -> None:
    regular = write_module(tmp_path / "a.wasm", 1204)
    with pytest.raises(ConfigError, match=r"'.*a\.wasm' is not a directory"):
        validate_pre_cache(pre_cache_settings(regular))


def test_validate_pre_cache_unset_dir() -> None:
    with pytest.raises(
        ConfigError,
        match=r"cache\.preCache\.modulesDir is missing: .* cache\.preCache\.enabled",
    ):
        validate_pre_cache(pre_cache_settings(None))


def test_validate_pre_cache_too_many_modules(tmp_path: Path) -> None:
    modules_dir = make_modules_dir(tmp_path / "modules")
    with pytest.raises(
        ConfigError,
        match=(
            r"contains 3 modules \(\*\.wasm, counted recursively\) but cache\.size"
            r" is 2: set cache\.size to at least 3"
        ),
    ):
        validate_pre_cache(pre_cache_settings(modules_dir, size=2))


def test_validate_pre_cache_exactly_size(tmp_path: Path) -> None:
    modules_dir = make_modules_dir(tmp_path / "modules")
    validate_pre_cache(pre_cache_settings(modules_dir, size=3))


def test_validate_pre_cache_disabled_skips_checks(tmp_path: Path) -> None:
    validate_pre_cache(pre_cache_settings(tmp_path / "absent", enabled=False))


def test_default_cache_dir_env_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "override"))
    assert default_cache_dir() == tmp_path / "override"


def test_default_cache_dir_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_cache_dir() == Path("/var/cache/nomad-wasmtime-driver")


def test_default_cache_dir_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "nomad-wasmtime-driver"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache/nomad-wasmtime-driver"


def test_resolve_cache_dir_prefers_setting(tmp_path: Path) -> None:
    assert resolve_cache_dir(CacheSettings(dir=tmp_path)) == tmp_path
    assert resolve_cache_dir(CacheSettings()) == default_cache_dir()
