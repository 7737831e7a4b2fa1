"""The zygote that forks `process`-isolation tasks: reuse, replacement, fd hygiene."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import psutil
import pytest
import wasmtime
from plugin_harness import (
    AllocDir,
    Plugin,
    configure,
    start_plugin,
    task_config_bytes,
    task_request,
    wait_until_exited,
)

from wasmtime_driver import zygote_client
from wasmtime_driver.protocol import driver_pb2
from wasmtime_driver.zygote_client import ZygoteLauncher

SPIN_WAT = """
(module (func (export "spin") (loop br 0)))
"""

SUM_WAT = """
(module
  (func (export "sum") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add))
"""


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("modules")
    for name, text in {"spin": SPIN_WAT, "sum": SUM_WAT}.items():
        (directory / f"{name}.wasm").write_bytes(wasmtime.wat2wasm(text))
    return directory


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[Plugin]:
    running = start_plugin()
    configure(running, {"dir": str(tmp_path / "cache")}, isolation="process")
    yield running
    running.shutdown()


def _start(plugin: Plugin, alloc: AllocDir, config: bytes) -> tuple[str, int]:
    request = task_request(alloc, config)
    response = plugin.driver.StartTask(request, timeout=30)
    pid: int = msgpack.unpackb(response.handle.driver_state)["pid"]
    return request.task.id, pid


def _start_spin(plugin: Plugin, modules: Path, alloc: AllocDir) -> tuple[str, int]:
    return _start(plugin, alloc, task_config_bytes(str(modules / "spin.wasm"), "spin"))


def _destroy(plugin: Plugin, alloc: AllocDir, task_id: str) -> None:
    request = driver_pb2.DestroyTaskRequest(task_id=task_id, force=True)
    plugin.driver.DestroyTask(request, timeout=30)
    alloc.wait_for_eof()


def _zygote_pids(plugin: Plugin) -> list[int]:
    children = psutil.Process(plugin.process.pid).children()
    return [
        child.pid
        for child in children
        if "wasmtime_driver.zygote" in child.cmdline()
        and child.status() != psutil.STATUS_ZOMBIE
    ]


def test_zygote_reused_across_tasks(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    parents = []
    for index in range(2):
        alloc = AllocDir(tmp_path / str(index), "spin").create()
        task_id, pid = _start_spin(plugin, modules, alloc)
        parents.append(psutil.Process(pid).ppid())
        _destroy(plugin, alloc, task_id)

    zygotes = _zygote_pids(plugin)
    assert zygotes == [parents[0]]
    assert parents[1] == parents[0]


def test_zygote_killed_replaced_for_next_task(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    first = AllocDir(tmp_path / "first", "sum").create()
    config = task_config_bytes(str(modules / "sum.wasm"), "sum", [2, 3])
    task_id, _pid = _start(plugin, first, config)
    plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=task_id), timeout=60)
    _destroy(plugin, first, task_id)
    [old_zygote] = _zygote_pids(plugin)
    os.kill(old_zygote, signal.SIGKILL)
    wait_until_exited(old_zygote)

    second = AllocDir(tmp_path / "second", "spin").create()
    task_id, pid = _start_spin(plugin, modules, second)
    parent = psutil.Process(pid).ppid()
    _destroy(plugin, second, task_id)

    assert bytes(first.stdout) == b"5\n"
    assert parent != old_zygote
    assert parent != plugin.process.pid
    assert _zygote_pids(plugin) == [parent]


def test_zygote_spare_killed_task_still_starts(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    first = AllocDir(tmp_path / "first", "sum").create()
    config = task_config_bytes(str(modules / "sum.wasm"), "sum", [2, 3])
    task_id, _pid = _start(plugin, first, config)
    plugin.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=task_id), timeout=60)
    _destroy(plugin, first, task_id)
    [zygote] = _zygote_pids(plugin)
    # The zygote forks a spare task process for the next task in advance.
    spares = [
        child.pid
        for child in psutil.Process(zygote).children()
        if child.status() != psutil.STATUS_ZOMBIE
    ]
    assert len(spares) == 1
    os.kill(spares[0], signal.SIGKILL)
    wait_until_exited(spares[0])

    second = AllocDir(tmp_path / "second", "sum").create()
    task_id, pid = _start(plugin, second, config)
    result = plugin.driver.WaitTask(
        driver_pb2.WaitTaskRequest(task_id=task_id), timeout=60
    )
    _destroy(plugin, second, task_id)

    assert pid != spares[0]
    assert result.result.exit_code == 0
    assert bytes(second.stdout) == b"5\n"
    assert _zygote_pids(plugin) == [zygote]


def test_zygote_task_holds_no_stray_fds(
    plugin: Plugin, modules: Path, tmp_path: Path
) -> None:
    alloc = AllocDir(tmp_path, "spin").create()
    task_id, pid = _start_spin(plugin, modules, alloc)
    # The task opens its module and cache files while it starts and closes
    # them before the module runs, which the CPU time shows.
    deadline = time.monotonic() + 30
    while psutil.Process(pid).cpu_times().user < 0.2:
        assert time.monotonic() < deadline, "the task never started spinning"
        time.sleep(0.02)
    fd_dir = Path(f"/proc/{pid}/fd")
    targets = {int(fd.name): os.readlink(fd) for fd in fd_dir.iterdir()}
    _destroy(plugin, alloc, task_id)

    assert targets[0] == "/dev/null"
    assert targets[1] == str(alloc.stdout_path)
    assert targets[2] == str(alloc.stderr_path)
    others = {fd: target for fd, target in targets.items() if fd > 2}
    assert not [t for t in others.values() if t.startswith(("socket:", "pipe:"))]
    assert not [t for t in others.values() if "pidfd" in t]
    assert not [t for t in others.values() if t.startswith(str(tmp_path))]


def test_zygote_launcher_falls_back_without_zygote(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The zygote exits at once when its module cannot be imported.
    monkeypatch.setattr(zygote_client, "ZYGOTE_MODULE", "wasmtime_driver.missing")
    launcher = ZygoteLauncher()
    start_path = tmp_path / "task.start"
    with open(os.devnull, "wb") as sink, caplog.at_level(logging.WARNING):
        logs = (sink.fileno(), sink.fileno())
        forked = asyncio.run(launcher.fork(start_path, logs))
        again = asyncio.run(launcher.fork(start_path, logs))
    launcher.close()

    assert forked is None
    assert again is None
    assert "fresh interpreter" in caplog.text
