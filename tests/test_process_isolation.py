"""Tasks in `process` isolation: the real plugin over its handshake, real shims."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import msgpack
import psutil
import pytest
import wasmtime
from google.protobuf import duration_pb2
from plugin_harness import (
    AllocDir,
    Plugin,
    configure,
    iterate,
    start_plugin,
    task_config_bytes,
    task_request,
    wait_until_exited,
)

from wasmtime_driver.protocol import driver_pb2

SUM_WAT = """
(module
  (func (export "sum") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add))
"""

SPIN_WAT = """
(module (func (export "spin") (loop br 0)))
"""

# Prints "sleeping", then sleeps 60 s inside a WASI call, where an Interrupt
# cannot reach it.
SLEEP_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 300) "sleeping\\n")
  (func (export "_start")
    (i32.store (i32.const 200) (i32.const 300))
    (i32.store (i32.const 204) (i32.const 9))
    (drop (call $write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 400)))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 60000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))
"""

EXIT_WAT = """
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 7))))
"""


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("modules")
    sources = {"sum": SUM_WAT, "spin": SPIN_WAT, "sleep": SLEEP_WAT, "exit": EXIT_WAT}
    for name, text in sources.items():
        (directory / f"{name}.wasm").write_bytes(wasmtime.wat2wasm(text))
    (directory / "bad.wasm").write_bytes(b"\0asm\x01\0\0\0garbage")
    return directory


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _start_process_plugin(cache_dir: Path) -> Plugin:
    plugin = start_plugin()
    configure(plugin, {"dir": str(cache_dir)}, isolation="process")
    return plugin


@pytest.fixture(scope="module")
def plugin(cache_dir: Path) -> Iterator[Plugin]:
    running = _start_process_plugin(cache_dir)
    yield running
    running.shutdown()


def _wait(plugin: Plugin, task_id: str) -> driver_pb2.WaitTaskResponse:
    request = driver_pb2.WaitTaskRequest(task_id=task_id)
    response: driver_pb2.WaitTaskResponse = plugin.driver.WaitTask(request, timeout=60)
    return response


def _stop(plugin: Plugin, task_id: str, seconds: float, signal: str = "") -> None:
    timeout = duration_pb2.Duration()
    timeout.FromNanoseconds(int(seconds * 1e9))
    request = driver_pb2.StopTaskRequest(
        task_id=task_id, timeout=timeout, signal=signal
    )
    plugin.driver.StopTask(request, timeout=60)


def _destroy(plugin: Plugin, task_id: str) -> None:
    request = driver_pb2.DestroyTaskRequest(task_id=task_id, force=True)
    plugin.driver.DestroyTask(request, timeout=30)


def _pid(response: driver_pb2.StartTaskResponse) -> int:
    state = msgpack.unpackb(response.handle.driver_state)
    pid: int = state["pid"]
    return pid


def _wait_for_output(alloc: AllocDir, expected: bytes) -> None:
    deadline = time.monotonic() + 30
    while bytes(alloc.stdout) != expected:
        assert time.monotonic() < deadline, f"no {expected!r} on stdout"
        time.sleep(0.02)


def test_process_sum_prints_result(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "sum").create()
    config = task_config_bytes(str(modules / "sum.wasm"), "sum", [123456, 678910])
    request = task_request(alloc, config)
    response = plugin.driver.StartTask(request, timeout=30)
    result = _wait(plugin, request.task.id)
    alloc.wait_for_eof()
    _destroy(plugin, request.task.id)

    assert result.result.exit_code == 0
    assert result.err == ""
    assert bytes(alloc.stdout) == b"802366\n"
    state = msgpack.unpackb(response.handle.driver_state)
    assert state["isolation"] == "process"
    assert state["pid"] != plugin.process.pid


def test_process_stop_spinning_reports_sigint(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "spin").create()
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    plugin.driver.StartTask(request, timeout=30)
    task_id = request.task.id
    waiting = plugin.driver.WaitTask.future(
        driver_pb2.WaitTaskRequest(task_id=task_id), timeout=60
    )
    # Stopped at once, most likely while the shim is still starting: the
    # signal must wait until the shim handles it, and still end the task.
    _stop(plugin, task_id, 10)
    result = waiting.result(timeout=60)
    alloc.wait_for_eof()
    _destroy(plugin, task_id)

    assert result.result.signal == 2
    assert result.result.exit_code == 130


def test_process_stats_report_rss(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "stats").create()
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    plugin.driver.StartTask(request, timeout=30)
    task_id = request.task.id
    stats = plugin.driver.TaskStats(
        driver_pb2.TaskStatsRequest(
            task_id=task_id,
            collection_interval=duration_pb2.Duration(nanos=200_000_000),
        ),
        timeout=30,
    )
    samples = list(iterate(stats, 3))
    _stop(plugin, task_id, 10, "SIGTERM")
    result = _wait(plugin, task_id)
    alloc.wait_for_eof()
    _destroy(plugin, task_id)

    memory = samples[-1].stats.agg_resource_usage.memory
    assert memory.rss > 0
    assert list(memory.measured_fields) == [driver_pb2.MemoryUsage.Fields.RSS]
    cpu = samples[-1].stats.agg_resource_usage.cpu
    assert cpu.user_mode + cpu.system_mode > 0
    assert result.result.signal == 15
    assert result.result.exit_code == 143


def test_process_stop_kills_task_in_host_call(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "sleep").create()
    request = task_request(alloc, task_config_bytes(str(modules / "sleep.wasm")))
    plugin.driver.StartTask(request, timeout=30)
    task_id = request.task.id
    _wait_for_output(alloc, b"sleeping\n")
    _stop(plugin, task_id, 0.5, "SIGINT")
    result = _wait(plugin, task_id)
    alloc.wait_for_eof()
    _destroy(plugin, task_id)

    assert result.result.signal == 9
    assert result.result.exit_code == 137


def test_process_bad_module_fails_task_only(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "bad").create()
    request = task_request(alloc, task_config_bytes(str(modules / "bad.wasm")))
    plugin.driver.StartTask(request, timeout=30)
    result = _wait(plugin, request.task.id)
    alloc.wait_for_eof()
    _destroy(plugin, request.task.id)

    assert result.result.exit_code != 0
    assert "bad.wasm" in result.err
    assert result.err.encode() in bytes(alloc.stderr)
    assert plugin.process.poll() is None


def test_process_task_recovered_by_new_plugin(
    cache_dir: Path, modules: Path, tmp_path: Path
) -> None:
    first = _start_process_plugin(cache_dir)
    alloc = AllocDir(tmp_path, "survivor").create()
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    response = first.driver.StartTask(request, timeout=30)
    assert first.shutdown() == 0
    assert psutil.Process(_pid(response)).status() != psutil.STATUS_ZOMBIE
    # The task has no copy of the plugin's stderr, so the host saw EOF.
    assert first.stderr_reader is not None
    assert not first.stderr_reader.is_alive()

    second = _start_process_plugin(cache_dir)
    try:
        # After an agent restart the handle carries no task config bytes.
        handle = driver_pb2.TaskHandle()
        handle.CopyFrom(response.handle)
        handle.config.msgpack_driver_config = b""
        second.driver.RecoverTask(
            driver_pb2.RecoverTaskRequest(handle=handle), timeout=10
        )
        task_id = request.task.id
        stats = second.driver.TaskStats(
            driver_pb2.TaskStatsRequest(task_id=task_id), timeout=30
        )
        sample = next(iterate(stats, 1))
        waiting = second.driver.WaitTask.future(
            driver_pb2.WaitTaskRequest(task_id=task_id), timeout=60
        )
        _stop(second, task_id, 10)
        result = waiting.result(timeout=60)
        alloc.wait_for_eof()
        _destroy(second, task_id)
    finally:
        second.shutdown()

    assert sample.stats.agg_resource_usage.memory.rss > 0
    assert result.result.signal == 2
    assert result.result.exit_code == 130


def test_process_exited_task_recovered_with_code(
    cache_dir: Path, modules: Path, tmp_path: Path
) -> None:
    first = _start_process_plugin(cache_dir)
    alloc = AllocDir(tmp_path, "exits").create()
    request = task_request(alloc, task_config_bytes(str(modules / "exit.wasm")))
    response = first.driver.StartTask(request, timeout=30)
    first.shutdown()
    wait_until_exited(_pid(response))

    second = _start_process_plugin(cache_dir)
    try:
        second.driver.RecoverTask(
            driver_pb2.RecoverTaskRequest(handle=response.handle), timeout=10
        )
        result = _wait(second, request.task.id)
        alloc.wait_for_eof()
        _destroy(second, request.task.id)
    finally:
        second.shutdown()

    assert result.result.exit_code == 7
    assert result.result.signal == 0


def test_process_fingerprint_reports_isolation(plugin: Plugin) -> None:
    stream = plugin.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=30)
    first = next(iterate(stream, 1))
    assert first.attributes["driver.wasmtime.isolation"].string_val == "process"


def test_process_destroy_force_kills_task(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "destroy").create()
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    response = plugin.driver.StartTask(request, timeout=30)
    _destroy(plugin, request.task.id)
    alloc.wait_for_eof()
    wait_until_exited(_pid(response))


def test_process_recover_rejects_thread_handle(
    plugin: Plugin, cache_dir: Path, modules: Path, tmp_path: Path
) -> None:
    thread_plugin = start_plugin()
    configure(thread_plugin, {"dir": str(cache_dir)})
    alloc = AllocDir(tmp_path, "thread").create()
    request = task_request(alloc, task_config_bytes(str(modules / "sum.wasm"), "sum"))
    try:
        response = thread_plugin.driver.StartTask(request, timeout=30)
        _wait(thread_plugin, request.task.id)
        alloc.wait_for_eof()
    finally:
        thread_plugin.shutdown()

    with pytest.raises(grpc.RpcError) as error:
        plugin.driver.RecoverTask(
            driver_pb2.RecoverTaskRequest(handle=response.handle), timeout=10
        )
    assert request.task.id in error.value.details()
    assert "names no task process" in error.value.details()


def test_process_recover_detects_pid_reuse(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "reuse").create()
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    response = plugin.driver.StartTask(request, timeout=30)
    # The same pid with another start time is another process.
    state = msgpack.unpackb(response.handle.driver_state)
    state["process_start_time"] -= 1000.0
    handle = driver_pb2.TaskHandle()
    handle.CopyFrom(response.handle)
    handle.driver_state = msgpack.packb(state)
    handle.config.id = request.task.id + "-copy"

    with pytest.raises(grpc.RpcError) as error:
        plugin.driver.RecoverTask(
            driver_pb2.RecoverTaskRequest(handle=handle), timeout=10
        )
    _destroy(plugin, request.task.id)
    alloc.wait_for_eof()

    assert "is gone and left no exit result" in error.value.details()


def _compiled_files(cache_dir: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in cache_dir.rglob("*.cwasm")}


def test_process_tasks_share_compiled_modules(
    plugin: Plugin, cache_dir: Path, tmp_path: Path
) -> None:
    # A module no other test uses, so its compiled file is new.
    module = tmp_path / "add.wasm"
    module.write_bytes(wasmtime.wat2wasm(SUM_WAT.replace('"sum"', '"add"')))
    before = _compiled_files(cache_dir)
    runs = []
    for index in range(2):
        alloc = AllocDir(tmp_path / str(index), "add").create()
        config = task_config_bytes(str(module), "add", [2, 3])
        request = task_request(alloc, config)
        plugin.driver.StartTask(request, timeout=30)
        result = _wait(plugin, request.task.id)
        alloc.wait_for_eof()
        _destroy(plugin, request.task.id)
        assert result.result.exit_code == 0
        assert bytes(alloc.stdout) == b"5\n"
        runs.append(_compiled_files(cache_dir))

    assert len(runs[0]) == len(before) + 1
    # The second task's shim loaded the file the first one stored.
    assert runs[1] == runs[0]
