"""ModuleCache under damage and load: bad cache files, mapped files replaced,
concurrent loads, unwritable cache directories."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import wasmtime
from test_cache_support import (
    FakeClock,
    cache_files,
    cache_settings,
    call_f,
    write_module,
)

from wasmtime_driver.cache import ModuleCache, module_cache
from wasmtime_driver.errors import ModuleError

FINGERPRINT = "wasmtime 50.0.1 test-engine"


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


def replace_content(path: Path, data: bytes) -> None:
    """Replace `path` by rename, as a writer that respects mapped files does."""
    temp = path.with_name(path.name + ".new")
    temp.write_bytes(data)
    temp.replace(path)


def flip_byte(data: bytes, offset: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 0xFF
    return bytes(damaged)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "restart"])
@pytest.mark.parametrize("damage", ["flipped", "truncated", "empty"])
def test_module_cache_damaged_file_recompiled(
    engine: wasmtime.Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
    restart: bool,
) -> None:
    module_path = write_module(tmp_path / "m.wasm", 1100)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    cache.load(module_path)
    (artifact,) = cache_files(cache.directory)
    good = artifact.read_bytes()
    damaged = {
        "flipped": flip_byte(good, len(good) // 2),
        "truncated": good[: len(good) - 100],
        "empty": b"",
    }[damage]
    replace_content(artifact, damaged)
    if restart:
        cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    assert call_f(engine, cache.load(module_path)) == 1100
    assert cache.stats().compiles == (1 if restart else 2)
    assert artifact.read_bytes() == good
    assert any("checksum mismatch" in m for m in warnings_of(caplog))


def test_module_cache_incompatible_file_recompiled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A file from an engine with other settings, filed under the same
    # fingerprint: the checksum matches and wasmtime rejects it.
    config = wasmtime.Config()
    config.consume_fuel = True
    fuel_engine = wasmtime.Engine(config)
    module_path = write_module(tmp_path / "m.wasm", 1101)
    first = ModuleCache(fuel_engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    first.load(module_path)
    plain_engine = wasmtime.Engine()
    second = ModuleCache(plain_engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    assert call_f(plain_engine, second.load(module_path)) == 1101
    assert second.stats().compiles == 1
    assert any("fuel" in m for m in warnings_of(caplog))
    assert call_f(plain_engine, second.load(module_path)) == 1101
    assert second.stats().hits == 1


def test_module_cache_garbage_with_valid_checksum(
    engine: wasmtime.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module_path = write_module(tmp_path / "m.wasm", 1102)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    cache.load(module_path)
    (artifact,) = cache_files(cache.directory)
    garbage = os.urandom(4096)
    module_digest = artifact.name.split("-")[0]
    fake = artifact.with_name(
        f"{module_digest}-{hashlib.sha256(garbage).hexdigest()}.cwasm"
    )
    artifact.unlink()
    fake.write_bytes(garbage)
    restarted = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    assert call_f(engine, restarted.load(module_path)) == 1102
    assert not fake.exists()
    assert any("failed deserialization" in m for m in warnings_of(caplog))


def test_module_cache_deleted_file_recompiled_quietly(
    engine: wasmtime.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another plugin process sharing the directory may evict a file.
    module_path = write_module(tmp_path / "m.wasm", 1103)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    cache.load(module_path)
    for artifact in cache_files(cache.directory):
        artifact.unlink()
    assert call_f(engine, cache.load(module_path)) == 1103
    assert cache.stats().compiles == 2
    assert warnings_of(caplog) == []


def test_module_cache_mapped_file_replaced(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    module_path = write_module(tmp_path / "m.wasm", 1104, padding=200_000)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    cache.load(module_path)
    mapped_module = cache.load(module_path)  # deserialized: maps the cache file
    assert cache.stats().hits == 1
    (artifact,) = cache_files(cache.directory)
    replace_content(artifact, os.urandom(64))
    for _ in range(20):
        assert call_f(engine, mapped_module) == 1104
    artifact.unlink()
    for _ in range(20):
        assert call_f(engine, mapped_module) == 1104


def test_module_cache_evicted_while_mapped(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    first = write_module(tmp_path / "a.wasm", 1105, padding=200_000)
    second = write_module(tmp_path / "b.wasm", 1106)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(size=1), tmp_path / "c")
    cache.load(first)
    mapped_module = cache.load(first)
    cache.load(second)  # evicts and deletes the file `mapped_module` maps
    assert cache.stats().evictions == 1
    assert call_f(engine, mapped_module) == 1105


def count_compiles(
    monkeypatch: pytest.MonkeyPatch, delay: float
) -> list[threading.Thread]:
    """Make each compile record its thread and take at least `delay` seconds."""
    compiles: list[threading.Thread] = []
    real_compile = module_cache.compile_module

    def slow_compile(
        engine: wasmtime.Engine, data: bytes, path: Path
    ) -> wasmtime.Module:
        compiles.append(threading.current_thread())
        time.sleep(delay)
        return real_compile(engine, data, path)

    monkeypatch.setattr(module_cache, "compile_module", slow_compile)
    return compiles


def load_in_threads(
    cache: ModuleCache, path: Path, count: int
) -> list[wasmtime.Module | Exception]:
    barrier = threading.Barrier(count)
    results: list[wasmtime.Module | Exception] = [ValueError("not run")] * count

    def worker(index: int) -> None:
        barrier.wait()
        try:
            results[index] = cache.load(path)
        except ModuleError as err:
            results[index] = err

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_module_cache_concurrent_loads_compile_once(
    engine: wasmtime.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiles = count_compiles(monkeypatch, delay=0.3)
    module_path = write_module(tmp_path / "m.wasm", 1107)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    results = load_in_threads(cache, module_path, 8)
    assert len(compiles) == 1
    for result in results:
        assert isinstance(result, wasmtime.Module)
        assert call_f(engine, result) == 1107
    assert cache.stats().stores == 1
    assert cache.stats().misses + cache.stats().hits == 8


def test_module_cache_concurrent_invalid_module_fails_all(
    engine: wasmtime.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiles = count_compiles(monkeypatch, delay=0.3)
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0\xff")
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    results = load_in_threads(cache, bad, 6)
    assert len(compiles) == 1
    for result in results:
        assert isinstance(result, ModuleError)
        assert "bad.wasm" in str(result)
    # A failed compile is not remembered: the next load tries again.
    with pytest.raises(ModuleError, match="failed to compile module"):
        cache.load(bad)
    assert len(compiles) == 2


def test_module_cache_unwritable_dir_degrades_and_recovers(
    engine: wasmtime.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A regular file where the cache directory should be makes every write
    # fail (ENOTDIR), even for root.
    blocker = tmp_path / "c"
    blocker.write_bytes(b"")
    clock = FakeClock()
    paths = [write_module(tmp_path / f"{n}.wasm", 1110 + n) for n in range(3)]
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), blocker, clock=clock)
    for _ in range(3):
        for n, path in enumerate(paths):
            assert call_f(engine, cache.load(path)) == 1110 + n
    assert cache.stats().compiles == 9
    assert cache.stats().stores == 0
    assert len(warnings_of(caplog)) == 1
    assert "compiling modules in memory" in warnings_of(caplog)[0]
    blocker.unlink()
    clock.now += 300
    cache.load(paths[0])
    assert cache.stats().stores == 1
    assert cache.load(paths[0]) is not None
    assert cache.stats().hits == 1


MOUNT_SCRIPT = """
import logging, sys
from pathlib import Path
import wasmtime
from test_cache_support import cache_files, cache_settings, call_f, write_module
from wasmtime_driver.cache import ModuleCache

warnings = []
class Collect(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())
logging.getLogger().addHandler(Collect())
engine = wasmtime.Engine()
work, cache_dir = Path(sys.argv[1]), Path(sys.argv[2])
cache = ModuleCache(engine, "fp", cache_settings(), cache_dir)
values = []
for n in range(3):
    module_path = write_module(work / f"{n}.wasm", 1120 + n, padding=300_000)
    values += [call_f(engine, cache.load(module_path)) for _ in range(2)]
stats = cache.stats()
leftovers = [p.name for p in cache_dir.rglob("*") if p.is_file()]
print(values, stats.compiles, stats.stores, len(warnings), leftovers)
print(warnings[0] if warnings else "")
"""


def run_on_mount(tmp_path: Path, mount_options: str, prepare: str) -> list[str]:
    """Run MOUNT_SCRIPT with the cache directory on a tmpfs of its own.

    The tmpfs lives in a private mount namespace, so it needs root and
    unshare(1); the test is skipped without them.
    """
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a private tmpfs")
    cache_dir = tmp_path / "mnt"
    cache_dir.mkdir()
    (tmp_path / "work").mkdir()
    script = tmp_path / "script.py"
    script.write_text(MOUNT_SCRIPT)
    command = (
        f"mount -t tmpfs -o {mount_options} tmpfs {cache_dir} && {prepare}"
        f' && exec "{sys.executable}" {script} {tmp_path / "work"} {cache_dir}'
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        timeout=60,
    )
    if "mount:" in result.stderr or "unshare:" in result.stderr:
        pytest.skip(f"cannot mount a private tmpfs: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


EXPECTED_VALUES = "[1120, 1120, 1121, 1121, 1122, 1122]"


def test_module_cache_read_only_dir_degrades(tmp_path: Path) -> None:
    lines = run_on_mount(tmp_path, "ro,size=1m", "true")
    assert lines[0] == f"{EXPECTED_VALUES} 6 0 1 []"
    assert "Read-only file system" in lines[1]


def test_module_cache_full_dir_degrades(tmp_path: Path) -> None:
    # 128 KiB fits the engine directory but not one compiled module of 300 KB.
    lines = run_on_mount(tmp_path, "size=128k", "true")
    assert lines[0] == f"{EXPECTED_VALUES} 6 0 1 ['fingerprint']"
    assert "No space left on device" in lines[1]
