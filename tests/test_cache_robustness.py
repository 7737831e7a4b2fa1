"""ModuleCache under damage and load: bad cache files, cache files changed
under loaded modules, concurrent loads, unwritable cache directories."""

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

from wasmtime_driver.cache import ModuleCache, compiler, module_cache
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


DAMAGES = ["flipped", "truncated", "empty"]


def damage_bytes(good: bytes, damage: str) -> bytes:
    return {
        "flipped": flip_byte(good, len(good) // 2),
        "truncated": good[: len(good) - 100],
        "empty": b"",
    }[damage]


@pytest.mark.parametrize("damage", DAMAGES)
def test_module_cache_damaged_file_recompiled(
    engine: wasmtime.Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    module_path = write_module(tmp_path / "m.wasm", 1100)
    ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c").load(module_path)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    (artifact,) = cache_files(cache.directory)
    good = artifact.read_bytes()
    replace_content(artifact, damage_bytes(good, damage))
    assert call_f(engine, cache.load(module_path)) == 1100
    assert cache.stats().compiles == 1
    assert cache.stats().hits == 0
    assert artifact.read_bytes() == good
    assert any("checksum mismatch" in m for m in warnings_of(caplog))


@pytest.mark.parametrize("in_place", [False, True], ids=["rename", "in-place"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_module_cache_damaged_file_served_from_memory(
    engine: wasmtime.Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
    in_place: bool,
) -> None:
    # A module loaded in this process stays in memory, so damage to its file
    # is found only by the next process that reads the file.
    module_path = write_module(tmp_path / "m.wasm", 1100)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    cache.load(module_path)
    (artifact,) = cache_files(cache.directory)
    good = artifact.read_bytes()
    damaged = damage_bytes(good, damage)
    if in_place:
        with open(artifact, "r+b") as file:
            file.write(damaged)
            file.truncate()
    else:
        replace_content(artifact, damaged)
    assert call_f(engine, cache.load(module_path)) == 1100
    assert (cache.stats().compiles, cache.stats().hits) == (1, 1)
    assert warnings_of(caplog) == []
    restarted = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    assert call_f(engine, restarted.load(module_path)) == 1100
    assert restarted.stats().compiles == 1
    assert artifact.read_bytes() == good


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
    assert any("precompiled artifact" in m for m in warnings_of(caplog))


def test_module_cache_deleted_file_recompiled_quietly(
    engine: wasmtime.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another plugin process sharing the directory may evict a file that this
    # process indexed at start and has not loaded yet.
    module_path = write_module(tmp_path / "m.wasm", 1103)
    first = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    first.load(module_path)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    assert cache.stats().entries == 1
    for artifact in cache_files(cache.directory):
        artifact.unlink()
    assert call_f(engine, cache.load(module_path)) == 1103
    assert cache.stats().compiles == 1
    assert warnings_of(caplog) == []
    # The module stays in memory when the file goes after it was loaded.
    for artifact in cache_files(cache.directory):
        artifact.unlink()
    assert call_f(engine, cache.load(module_path)) == 1103
    assert (cache.stats().compiles, cache.stats().hits) == (1, 1)


def test_module_cache_fifo_in_place_of_file(
    engine: wasmtime.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Opening a FIFO for reading blocks until a writer comes, unless the cache
    # opens it non-blocking and rejects it.
    module_path = write_module(tmp_path / "m.wasm", 1112)
    ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c").load(module_path)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    (artifact,) = cache_files(cache.directory)
    artifact.unlink()
    os.mkfifo(artifact)
    assert call_f(engine, cache.load(module_path)) == 1112
    assert cache.stats().compiles == 1
    assert artifact.is_file()
    assert any("not a regular file" in m for m in warnings_of(caplog))


def test_module_cache_loaded_file_replaced(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    module_path = write_module(tmp_path / "m.wasm", 1104, padding=200_000)
    ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c").load(module_path)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(), tmp_path / "c")
    loaded_module = cache.load(module_path)  # deserialized from the cache file
    assert (cache.stats().hits, cache.stats().compiles) == (1, 0)
    (artifact,) = cache_files(cache.directory)
    replace_content(artifact, os.urandom(64))
    for _ in range(20):
        assert call_f(engine, loaded_module) == 1104
    artifact.unlink()
    for _ in range(20):
        assert call_f(engine, loaded_module) == 1104


def test_module_cache_evicted_while_in_use(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    first = write_module(tmp_path / "a.wasm", 1105, padding=200_000)
    second = write_module(tmp_path / "b.wasm", 1106)
    ModuleCache(engine, FINGERPRINT, cache_settings(size=1), tmp_path / "c").load(first)
    cache = ModuleCache(engine, FINGERPRINT, cache_settings(size=1), tmp_path / "c")
    loaded_module = cache.load(first)  # deserialized from the cache file
    cache.load(second)  # evicts `first` and deletes its file
    assert cache.stats().evictions == 1
    assert call_f(engine, loaded_module) == 1105
    assert call_f(engine, cache.load(first)) == 1105
    assert cache.stats().compiles == 2


def count_compiles(
    monkeypatch: pytest.MonkeyPatch, delay: float
) -> list[threading.Thread]:
    """Make each compile record its thread and take at least `delay` seconds."""
    compiles: list[threading.Thread] = []
    real_compile = compiler.compile_module

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


TASK_LOOP_SCRIPT = """
import os, sys, threading
from pathlib import Path
import wasmtime
from test_cache_support import cache_settings, call_f
from wasmtime_driver.cache import ModuleCache

engine = wasmtime.Engine()
module_path, cache_dir = Path(sys.argv[1]), Path(sys.argv[2])
cache = ModuleCache(engine, "fp", cache_settings(), cache_dir)
module = cache.load(module_path)
calls = [0]
stop = threading.Event()

def task_loop():
    # Instantiating and calling runs the module's machine code, as a task does.
    while not stop.is_set():
        value = call_f(engine, module)
        if value != 1130:
            print("task returned", value, file=sys.stderr, flush=True)
            os._exit(3)
        calls[0] += 1

threading.Thread(target=task_loop, daemon=True).start()
stats = cache.stats()
print("loaded", stats.hits, stats.compiles, flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "calls":
        print("calls", calls[0], flush=True)
    elif command == "load":
        stats_before = cache.stats()
        value = call_f(engine, cache.load(module_path))
        stats = cache.stats()
        print("load", value, stats.hits - stats_before.hits,
              stats.compiles - stats_before.compiles, flush=True)
    elif command == "restart":
        # A new cache object reads the directory as a new plugin process would.
        fresh = ModuleCache(engine, "fp", cache_settings(), cache_dir)
        value = call_f(engine, fresh.load(module_path))
        print("restart", value, fresh.stats().hits, fresh.stats().compiles,
              flush=True)
    elif command == "quit":
        stop.set()
        break
"""


class TaskLoop:
    """A subprocess that loads a module through the cache and runs it in a loop."""

    def __init__(self, tmp_path: Path, module_path: Path, cache_dir: Path) -> None:
        script = tmp_path / "task_loop.py"
        script.write_text(TASK_LOOP_SCRIPT)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(module_path), str(cache_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def read(self) -> list[str]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait(timeout=10)
            assert self.process.stderr is not None
            raise AssertionError(
                f"task loop exited with {code}: {self.process.stderr.read()}"
            )
        return line.split()

    def ask(self, command: str) -> list[str]:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the process died: read() reports its exit code
        return self.read()

    def quit(self) -> int:
        """Stop the task loop and return the exit code."""
        assert self.process.stdin is not None
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        return self.process.wait(timeout=30)

    def close(self) -> None:
        """Kill the task loop if it still runs, and close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def wait_for_calls(self, more: int) -> None:
        """Return once the task loop has run `more` further calls."""
        start = int(self.ask("calls")[1])
        while int(self.ask("calls")[1]) < start + more:
            time.sleep(0.01)


@pytest.mark.timeout(120)
def test_module_cache_file_changed_under_running_task(
    engine: wasmtime.Engine, tmp_path: Path
) -> None:
    # With the cache file mapped, truncating it killed the process with SIGBUS
    # at the next call into the module's code.
    module_path = write_module(tmp_path / "m.wasm", 1130, padding=300_000)
    cache_dir = tmp_path / "c"
    cache = ModuleCache(engine, "fp", cache_settings(), cache_dir)
    cache.load(module_path)
    (artifact,) = cache_files(cache.directory)
    good = artifact.read_bytes()
    loop = TaskLoop(tmp_path, module_path, cache_dir)
    try:
        assert loop.read() == ["loaded", "1", "0"]  # deserialized from the file
        loop.wait_for_calls(50)

        os.truncate(artifact, 0)
        loop.wait_for_calls(200)
        assert loop.ask("load") == ["load", "1130", "1", "0"]
        assert loop.ask("restart") == ["restart", "1130", "0", "1"]
        assert artifact.read_bytes() == good

        with open(artifact, "r+b") as file:
            file.write(os.urandom(len(good)))
        loop.wait_for_calls(200)
        assert loop.ask("restart") == ["restart", "1130", "0", "1"]
        assert loop.ask("restart") == ["restart", "1130", "1", "0"]

        assert loop.quit() == 0
    finally:
        loop.close()
