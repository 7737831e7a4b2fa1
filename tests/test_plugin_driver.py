"""The Driver service end to end: the real plugin process over its handshake."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import msgpack
import pytest
import wasmtime
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from plugin_harness import (
    REPO,
    AllocDir,
    Plugin,
    configure,
    iterate,
    start_plugin,
    task_config_bytes,
    task_request,
)

from wasmtime_driver.protocol import (
    base_pb2,
    driver_pb2,
    recoverable_error_pb2,
)

SUM_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "sum") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add))
"""

SPIN_WAT = """
(module (func (export "spin") (loop br 0)))
"""

TRAP_WAT = """
(module (func (export "boom") unreachable))
"""


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("modules")
    for name, text in (("sum", SUM_WAT), ("spin", SPIN_WAT), ("trap", TRAP_WAT)):
        (directory / f"{name}.wasm").write_bytes(wasmtime.wat2wasm(text))
    return directory


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    cache_dir = tmp_path_factory.mktemp("cache")
    running = start_plugin()
    configure(running, {"dir": str(cache_dir)})
    yield running
    running.shutdown()


def _run(
    plugin: Plugin, alloc: AllocDir, config: bytes
) -> tuple[driver_pb2.WaitTaskResponse, str]:
    request = task_request(alloc.create(), config)
    plugin.driver.StartTask(request, timeout=30)
    task_id = request.task.id
    result = plugin.driver.WaitTask(
        driver_pb2.WaitTaskRequest(task_id=task_id), timeout=60
    )
    alloc.wait_for_eof()
    plugin.driver.DestroyTask(
        driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=10
    )
    return result, task_id


def test_plugin_info_identifies_driver(plugin: Plugin) -> None:
    info = plugin.base.PluginInfo(base_pb2.PluginInfoRequest(), timeout=10)
    assert info.type == base_pb2.PluginType.DRIVER
    assert list(info.plugin_api_versions) == ["v0.1.0"]
    assert info.name == "wasmtime"
    assert info.plugin_version.count(".") == 2


def test_schemas_are_objects(plugin: Plugin) -> None:
    schema = plugin.base.ConfigSchema(base_pb2.ConfigSchemaRequest(), timeout=10)
    assert schema.spec.WhichOneof("block") == "object"
    assert "cache" in schema.spec.object.attributes
    task_schema = plugin.driver.TaskConfigSchema(
        driver_pb2.TaskConfigSchemaRequest(), timeout=10
    )
    attributes = task_schema.spec.object.attributes
    assert attributes["modulePath"].Attr.required is True
    assert set(attributes) == {"modulePath", "main", "ioBuffer", "wasi"}


def test_capabilities_set(plugin: Plugin) -> None:
    response = plugin.driver.Capabilities(driver_pb2.CapabilitiesRequest(), timeout=10)
    assert response.HasField("capabilities")
    assert response.capabilities.fs_isolation == (
        driver_pb2.DriverCapabilities.FSIsolation.NONE
    )
    assert response.capabilities.send_signals is False


def test_fingerprint_healthy_with_versions(plugin: Plugin) -> None:
    stream = plugin.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=30)
    first = next(iterate(stream, 1))
    assert first.health == driver_pb2.FingerprintResponse.HealthState.HEALTHY
    attributes = first.attributes
    assert attributes["driver.wasmtime.version"].string_val
    assert attributes["driver.wasmtime.wasmtime_version"].string_val.startswith("50.")
    assert attributes["driver.wasmtime.cache.type"].string_val == "lfu"


def test_sum_prints_result(plugin: Plugin, modules: Path, tmp_path: Path) -> None:
    config = task_config_bytes(str(modules / "sum.wasm"), "sum", [123456, 678910])
    alloc = AllocDir(tmp_path, "sum")
    result, _ = _run(plugin, alloc, config)
    assert result.result.exit_code == 0
    assert result.err == ""
    assert bytes(alloc.stdout) == b"802366\n"


def test_relative_module_found_in_task_dir(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "rel").create()
    (alloc.root / "rel" / "local" / "m.wasm").write_bytes(
        (modules / "sum.wasm").read_bytes()
    )
    request = task_request(alloc, task_config_bytes("local/m.wasm", "sum", [1, 2]))
    plugin.driver.StartTask(request, timeout=30)
    result = plugin.driver.WaitTask(
        driver_pb2.WaitTaskRequest(task_id=request.task.id), timeout=60
    )
    alloc.wait_for_eof()
    assert result.result.exit_code == 0
    assert bytes(alloc.stdout) == b"3\n"


def test_missing_module_fails_task_only(plugin: Plugin, tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path / "a", "missing")
    result, _ = _run(plugin, alloc, task_config_bytes("no/such/module.wasm", "sum"))
    assert result.result.exit_code != 0
    assert "no/such/module.wasm" in result.err
    assert "no/such/module.wasm" in alloc.stderr.decode()
    # The plugin keeps serving other tasks.
    info = plugin.base.PluginInfo(base_pb2.PluginInfoRequest(), timeout=10)
    assert info.name == "wasmtime"


def test_missing_function_fails_task(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "nofunc")
    result, _ = _run(
        plugin, alloc, task_config_bytes(str(modules / "sum.wasm"), "nope")
    )
    assert result.result.exit_code != 0
    assert '"nope"' in result.err
    assert "nope" in alloc.stderr.decode()


def test_trap_fails_task(plugin: Plugin, modules: Path, tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path, "trap")
    result, _ = _run(
        plugin, alloc, task_config_bytes(str(modules / "trap.wasm"), "boom")
    )
    assert result.result.exit_code != 0
    assert "unreachable" in result.err


def test_wait_task_several_waiters(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "waiters").create()
    request = task_request(
        alloc, task_config_bytes(str(modules / "sum.wasm"), "sum", [2, 3])
    )
    plugin.driver.StartTask(request, timeout=30)
    wait = driver_pb2.WaitTaskRequest(task_id=request.task.id)
    futures = [plugin.driver.WaitTask.future(wait, timeout=60) for _ in range(3)]
    codes = [f.result().result.exit_code for f in futures]
    assert codes == [0, 0, 0]
    # After the exit, the stored result is returned at once.
    again = plugin.driver.WaitTask(wait, timeout=10)
    assert again.HasField("result")
    alloc.wait_for_eof()


def test_stop_interrupts_spinning_task(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "spin").create()
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    plugin.driver.StartTask(request, timeout=30)
    task_id = request.task.id
    waiting = plugin.driver.WaitTask.future(
        driver_pb2.WaitTaskRequest(task_id=task_id), timeout=60
    )
    inspect = plugin.driver.InspectTask(
        driver_pb2.InspectTaskRequest(task_id=task_id), timeout=10
    )
    assert inspect.task.state == driver_pb2.TaskState.RUNNING

    stats = plugin.driver.TaskStats(
        driver_pb2.TaskStatsRequest(
            task_id=task_id,
            collection_interval=duration_pb2.Duration(nanos=100_000_000),
        ),
        timeout=30,
    )
    samples = list(iterate(stats, 3))
    assert all(s.stats.HasField("agg_resource_usage") for s in samples)
    assert all(s.stats.HasField("timestamp") for s in samples)
    assert samples[-1].stats.agg_resource_usage.cpu.user_mode > 0 or (
        samples[-1].stats.agg_resource_usage.cpu.system_mode > 0
    )

    plugin.driver.StopTask(
        driver_pb2.StopTaskRequest(
            task_id=task_id, timeout=duration_pb2.Duration(seconds=5), signal="SIGTERM"
        ),
        timeout=30,
    )
    result = waiting.result(timeout=30)
    assert result.result.signal == 15
    assert result.result.exit_code == 128 + 15
    alloc.wait_for_eof()
    inspect = plugin.driver.InspectTask(
        driver_pb2.InspectTaskRequest(task_id=task_id), timeout=10
    )
    assert inspect.task.state == driver_pb2.TaskState.EXITED
    plugin.driver.DestroyTask(
        driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=10
    )


def test_destroy_force_stops_running_task(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "destroy").create()
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    plugin.driver.StartTask(request, timeout=30)
    task_id = request.task.id
    with pytest.raises(grpc.RpcError) as refused:
        plugin.driver.DestroyTask(
            driver_pb2.DestroyTaskRequest(task_id=task_id, force=False), timeout=10
        )
    assert "destroy it with force" in refused.value.details()
    plugin.driver.DestroyTask(
        driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=30
    )
    alloc.wait_for_eof()
    with pytest.raises(grpc.RpcError) as gone:
        plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=task_id), timeout=10)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_start_handle_echoes_task_config(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "handle").create()
    request = task_request(
        alloc, task_config_bytes(str(modules / "sum.wasm"), "sum", [1, 1])
    )
    response = plugin.driver.StartTask(request, timeout=30)
    assert response.handle.config == request.task
    assert response.handle.version >= 1
    state = msgpack.unpackb(response.handle.driver_state)
    assert state["task_id"] == request.task.id
    plugin.driver.WaitTask(
        driver_pb2.WaitTaskRequest(task_id=request.task.id), timeout=60
    )
    alloc.wait_for_eof()

    # Recovering a task this process tracks is accepted, idempotently.
    recover = driver_pb2.RecoverTaskRequest(handle=response.handle)
    plugin.driver.RecoverTask(recover, timeout=10)
    plugin.driver.RecoverTask(recover, timeout=10)


def test_recover_unknown_task_rejected(plugin: Plugin) -> None:
    handle = driver_pb2.TaskHandle(
        version=1, config=driver_pb2.TaskConfig(id="gone/task/00000000")
    )
    with pytest.raises(grpc.RpcError) as error:
        plugin.driver.RecoverTask(
            driver_pb2.RecoverTaskRequest(handle=handle), timeout=10
        )
    assert "gone/task/00000000" in error.value.details()


def test_unreadable_log_is_recoverable_error(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "nolog")
    request = task_request(alloc, task_config_bytes(str(modules / "sum.wasm"), "sum"))
    request.task.stdout_path = str(tmp_path / "missing-dir" / "x.fifo")
    with pytest.raises(grpc.RpcError) as error:
        plugin.driver.StartTask(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(error.value)
    assert status is not None
    detail = recoverable_error_pb2.RecoverableError()
    assert status.details[0].Unpack(detail)
    assert detail.recoverable is True


def test_invalid_task_config_not_recoverable(plugin: Plugin, tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path, "badconfig").create()
    config = msgpack.packb(
        {"modulePath": "m.wasm", "ioBuffer": {"enabled": True, "size": -1}}
    )
    with pytest.raises(grpc.RpcError) as error:
        plugin.driver.StartTask(task_request(alloc, config), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ioBuffer.size" in error.value.details()
    assert rpc_status.from_call(error.value) is None


@pytest.mark.parametrize("rpc", ["SignalTask", "ExecTask"])
def test_unsupported_rpcs_explain(plugin: Plugin, rpc: str) -> None:
    request = (
        driver_pb2.SignalTaskRequest(task_id="x", signal="SIGHUP")
        if rpc == "SignalTask"
        else driver_pb2.ExecTaskRequest(task_id="x", command=["sh"])
    )
    with pytest.raises(grpc.RpcError) as error:
        getattr(plugin.driver, rpc)(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "does not support" in error.value.details()


def test_stop_unknown_task_is_ok(plugin: Plugin) -> None:
    plugin.driver.StopTask(driver_pb2.StopTaskRequest(task_id="unknown"), timeout=10)
    plugin.driver.DestroyTask(
        driver_pb2.DestroyTaskRequest(task_id="unknown"), timeout=10
    )


def test_task_events_report_start(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    events = plugin.driver.TaskEvents(driver_pb2.TaskEventsRequest(), timeout=30)
    time.sleep(0.2)  # let the subscription reach the plugin
    alloc = AllocDir(tmp_path, "events")
    _, task_id = _run(
        plugin, alloc, task_config_bytes(str(modules / "sum.wasm"), "sum", [1, 2])
    )
    received = list(iterate(events, 1))
    assert received[0].task_id == task_id
    assert received[0].task_name == "events"
    assert received[0].HasField("timestamp")
    assert "started" in received[0].message


def test_stderr_lines_are_hclog_json(plugin: Plugin) -> None:
    assert plugin.stderr_lines, "the plugin logged nothing"
    for line in plugin.stderr_lines:
        entry = json.loads(line)
        assert isinstance(entry["@message"], str)
        assert entry["@level"] in {"trace", "debug", "info", "warn", "error"}


def test_plugin_cwd_relative_module(tmp_path: Path) -> None:
    """A relative modulePath falls back to the agent's working directory."""
    module_dir = tmp_path / "agent"
    (module_dir / "mods").mkdir(parents=True)
    (module_dir / "mods" / "sum.wasm").write_bytes(wasmtime.wat2wasm(SUM_WAT))
    plugin = start_plugin(cwd=module_dir)
    try:
        configure(plugin, {"dir": str(tmp_path / "cache")})
        alloc = AllocDir(tmp_path / "alloc", "cwd")
        result, _ = _run(
            plugin, alloc, task_config_bytes("mods/sum.wasm", "sum", [40, 2])
        )
        assert result.result.exit_code == 0
        assert bytes(alloc.stdout) == b"42\n"
    finally:
        assert plugin.shutdown() == 0


def test_repo_example_module_exists() -> None:
    assert (REPO / "example" / "wasm-modules" / "sum.wasm").exists()


def test_set_config_missing_precache_dir_rejected(tmp_path: Path) -> None:
    plugin = start_plugin()
    try:
        with pytest.raises(grpc.RpcError) as error:
            configure(
                plugin,
                {
                    "dir": str(tmp_path / "cache"),
                    "preCache": {"enabled": True, "modulesDir": str(tmp_path / "none")},
                },
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "modulesDir" in error.value.details()
        assert str(tmp_path / "none") in error.value.details()
    finally:
        assert plugin.shutdown() == 0


def test_precompiled_module_hit_by_other_path(modules: Path, tmp_path: Path) -> None:
    """A module pre-compiled at SetConfig is a cache hit under another name."""
    precache_dir = tmp_path / "precache"
    precache_dir.mkdir()
    (precache_dir / "sum.wasm").write_bytes((modules / "sum.wasm").read_bytes())
    copy = tmp_path / "elsewhere" / "renamed.wasm"
    copy.parent.mkdir()
    copy.write_bytes((modules / "sum.wasm").read_bytes())

    plugin = start_plugin()
    try:
        configure(
            plugin,
            {
                "dir": str(tmp_path / "cache"),
                "preCache": {"enabled": True, "modulesDir": str(precache_dir)},
            },
        )
        before = _cache_counts(plugin)
        alloc = AllocDir(tmp_path / "alloc", "hit")
        result, _ = _run(plugin, alloc, task_config_bytes(str(copy), "sum", [2, 2]))
        assert bytes(alloc.stdout) == b"4\n"
        assert result.result.exit_code == 0

        # Pre-compiling was the one miss; the task's load was a hit.
        assert before == (0, 1)
        assert _cache_counts(plugin) == (1, 1)
    finally:
        assert plugin.shutdown() == 0


def _cache_counts(plugin: Plugin) -> tuple[int, int]:
    """Return the cache's (hits, misses) from a new Fingerprint stream."""
    stream = plugin.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=30)
    attributes = next(iterate(stream, 1)).attributes
    hits = attributes["driver.wasmtime.cache.hits"].int_val
    misses = attributes["driver.wasmtime.cache.misses"].int_val
    return hits, misses


def test_concurrent_same_id_starts_once(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    """Two StartTask calls for one id, while logmon is slow, start one task."""
    alloc = AllocDir(tmp_path, "twice")
    for sub in ("alloc/logs", "twice/local"):
        (alloc.root / sub).mkdir(parents=True)
    os.mkfifo(alloc.stdout_path, 0o600)
    os.mkfifo(alloc.stderr_path, 0o600)
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    starts = [plugin.driver.StartTask.future(request, timeout=30) for _ in range(4)]
    time.sleep(0.3)  # every call is now waiting for the FIFOs' reader

    readers = [
        threading.Thread(target=_drain_fifo, args=(path,), daemon=True)
        for path in (alloc.stdout_path, alloc.stderr_path)
    ]
    for reader in readers:
        reader.start()
    handles = [start.result(timeout=30).handle for start in starts]
    assert {h.config.id for h in handles} == {request.task.id}

    task_id = request.task.id
    plugin.driver.StopTask(
        driver_pb2.StopTaskRequest(
            task_id=task_id, timeout=duration_pb2.Duration(seconds=5)
        ),
        timeout=30,
    )
    result = plugin.driver.WaitTask(
        driver_pb2.WaitTaskRequest(task_id=task_id), timeout=30
    )
    assert result.result.signal == 2
    for reader in readers:
        reader.join(10)
        assert not reader.is_alive(), "a second copy of the task still holds a log open"
    plugin.driver.DestroyTask(
        driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=10
    )


def _drain_fifo(path: Path) -> None:
    with open(path, "rb", buffering=0) as fifo:
        while fifo.read(65536):
            pass


def test_task_threads_end_with_tasks(modules: Path, tmp_path: Path) -> None:
    plugin = start_plugin()
    try:
        configure(plugin, {"dir": str(tmp_path / "cache")})

        def thread_count() -> int:
            return len(list(Path(f"/proc/{plugin.process.pid}/task").iterdir()))

        # The first compile starts wasmtime's own compiler threads, which stay.
        _run(
            plugin,
            AllocDir(tmp_path / "warm", "burst"),
            task_config_bytes(str(modules / "sum.wasm"), "sum", [1, 2]),
        )
        idle = thread_count()
        task_ids = []
        for index in range(8):
            alloc = AllocDir(tmp_path / str(index), "burst").create()
            config = task_config_bytes(str(modules / "spin.wasm"), "spin")
            request = task_request(alloc, config)
            plugin.driver.StartTask(request, timeout=30)
            task_ids.append(request.task.id)
        # Other threads of the plugin (gRPC's, asyncio's) may come and go, so
        # this only checks that the running tasks added threads.
        assert thread_count() > idle
        for task_id in task_ids:
            plugin.driver.DestroyTask(
                driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=30
            )
        deadline = time.monotonic() + 10
        while thread_count() > idle and time.monotonic() < deadline:
            time.sleep(0.05)
        assert thread_count() <= idle
    finally:
        assert plugin.shutdown() == 0


def test_stats_zero_interval_uses_default(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "stats0").create()
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    plugin.driver.StartTask(request, timeout=30)
    task_id = request.task.id
    stream = plugin.driver.TaskStats(
        driver_pb2.TaskStatsRequest(
            task_id=task_id, collection_interval=duration_pb2.Duration(seconds=-1)
        ),
        timeout=30,
    )
    first = next(iterate(stream, 1))
    assert first.stats.HasField("agg_resource_usage")
    plugin.driver.StopTask(
        driver_pb2.StopTaskRequest(task_id=task_id, signal="9"), timeout=30
    )
    result = plugin.driver.WaitTask(
        driver_pb2.WaitTaskRequest(task_id=task_id), timeout=30
    )
    assert result.result.signal == 9
    assert result.result.exit_code == 137
    alloc.wait_for_eof()


def test_regular_file_log_appended(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "file")
    (alloc.root / "file" / "local").mkdir(parents=True)
    stdout = tmp_path / "stdout.log"
    stdout.write_bytes(b"earlier\n")
    request = task_request(
        alloc, task_config_bytes(str(modules / "sum.wasm"), "sum", [1, 2])
    )
    request.task.stdout_path = str(stdout)
    request.task.stderr_path = "/dev/null"
    plugin.driver.StartTask(request, timeout=30)
    plugin.driver.WaitTask(
        driver_pb2.WaitTaskRequest(task_id=request.task.id), timeout=30
    )
    assert stdout.read_bytes() == b"earlier\n3\n"


def test_destroy_during_pending_start_wins(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    """A forced DestroyTask that arrives while StartTask waits for logmon ends the task."""
    alloc = AllocDir(tmp_path, "pending")
    for sub in ("alloc/logs", "pending/local"):
        (alloc.root / sub).mkdir(parents=True)
    os.mkfifo(alloc.stdout_path, 0o600)
    os.mkfifo(alloc.stderr_path, 0o600)
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    task_id = request.task.id
    start = plugin.driver.StartTask.future(request, timeout=30)
    time.sleep(0.2)  # StartTask is now waiting for the FIFOs' reader
    destroy = plugin.driver.DestroyTask.future(
        driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=30
    )
    time.sleep(0.2)
    readers = [
        threading.Thread(target=_drain_fifo, args=(path,), daemon=True)
        for path in (alloc.stdout_path, alloc.stderr_path)
    ]
    for reader in readers:
        reader.start()
    start.result(timeout=30)
    destroy.result(timeout=30)

    for reader in readers:
        reader.join(10)
        assert not reader.is_alive(), "the task still runs after DestroyTask"
    with pytest.raises(grpc.RpcError) as gone:
        plugin.driver.InspectTask(
            driver_pb2.InspectTaskRequest(task_id=task_id), timeout=10
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_task_threads_run_at_lower_priority(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "nice").create()
    request = task_request(alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))
    plugin.driver.StartTask(request, timeout=30)
    try:
        pid = plugin.process.pid
        main_nice = os.getpriority(os.PRIO_PROCESS, pid)
        deadline = time.monotonic() + 10
        niceness: list[int] = []
        while time.monotonic() < deadline:
            niceness = [
                os.getpriority(os.PRIO_PROCESS, int(tid.name))
                for tid in Path(f"/proc/{pid}/task").iterdir()
            ]
            if max(niceness) > main_nice:
                break
            time.sleep(0.05)
        assert max(niceness) >= main_nice + 10
    finally:
        plugin.driver.DestroyTask(
            driver_pb2.DestroyTaskRequest(task_id=request.task.id, force=True),
            timeout=30,
        )
        alloc.wait_for_eof()
