"""Helpers shared by the module cache tests (this file contains no tests)."""

from __future__ import annotations

import os
from pathlib import Path

import wasmtime

from wasmtime_driver.settings import CacheSettings, ExpirationSettings


def module_bytes(value: int, padding: int = 0) -> bytes:
    """Return a module whose export `f` returns `value`.

    Values 1000 to 1999 give modules of the same size, for in-place rewrites.
    `padding` adds a data segment of that many bytes.
    """
    data = f'(data (i32.const 0) "{"x" * padding}")' if padding else ""
    wat = f"""
        (module
          (memory (export "memory") {1 + padding // 65536})
          {data}
          (func (export "f") (result i32) i32.const {value}))
    """
    return bytes(wasmtime.wat2wasm(wat))


def write_module(path: Path, value: int, padding: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(module_bytes(value, padding))
    return path


def age_file(path: Path, seconds: float) -> None:
    """Set the mtime of `path` to `seconds` ago."""
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


def call_f(engine: wasmtime.Engine, module: wasmtime.Module) -> int:
    store = wasmtime.Store(engine)
    instance = wasmtime.Instance(store, module, [])
    func = instance.exports(store)["f"]
    assert isinstance(func, wasmtime.Func)
    result = func(store)
    assert isinstance(result, int)
    return result


def cache_settings(
    cache_type: str = "lru",
    size: int = 5,
    ttl: float | None = None,
    enabled: bool = True,
) -> CacheSettings:
    expiration = ExpirationSettings(enabled=ttl is not None, entry_ttl=ttl or 600.0)
    return CacheSettings(
        enabled=enabled, type=cache_type, size=size, expiration=expiration
    )


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.cwasm"))


class FakeClock:
    """A clock that advances only when a test sets `now`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
