"""Running tasks: the `process` isolation mode.

Each task runs in an OS process of its own, the shim (`wasmtime_driver.shim`),
in a new session, so its process group can be signalled as a whole and it
keeps running when the plugin exits. A new plugin process re-attaches to it
with `recover`, using the pid and start time from Nomad's task handle. The
shim writes its exit result to a file, because a re-attached plugin is not the
shim's parent and cannot read its exit status.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

from .errors import DriverError
from .handle import ExitResult, TaskRequest
from .logfiles import open_logs
from .process_task import ProcessTask
from .settings import CacheSettings, TaskConfig
from .shim_files import ShimStart, read_result, task_file_stem, write_start

SHIM_MODULE = "wasmtime_driver.shim"


class ProcessExecutor:
    """Starts each task as a shim process and reports how it ended.

    `state_dir` contains the start and result files of this plugin's tasks.
    """

    def __init__(
        self, cache: CacheSettings, cache_dir: Path, state_dir: Path, cwd: Path
    ) -> None:
        self._cache = cache
        self._cache_dir = cache_dir
        self._state_dir = state_dir
        self._cwd = cwd

    async def start(
        self, request: TaskRequest, config: TaskConfig
    ) -> tuple[ProcessTask, asyncio.Future[ExitResult]]:
        """Open the task's logs and start its shim; raises LogOpenError or DriverError."""
        stem = self._prepare_files(request)
        result_path = stem.with_suffix(".result")
        start_path = stem.with_suffix(".start")
        start = ShimStart(request, self._cache, self._cache_dir, self._cwd, result_path)
        write_start(start_path, start)

        stdout, stderr = await open_logs(request.stdout_path, request.stderr_path)
        ready_read, ready_write = os.pipe()
        try:
            process = _spawn(start_path, ready_write, (stdout, stderr))
        except OSError as err:
            os.close(ready_read)
            start_path.unlink(missing_ok=True)
            raise DriverError(f"failed to start the task process: {err}") from err
        finally:
            # The shim has its own copies; the plugin's would keep the log
            # FIFOs open after the task exits, and Nomad's logmon waits for EOF.
            os.close(ready_write)
            stdout.close()
            stderr.close()

        task = ProcessTask.started(request, process.pid, result_path)
        task.watch_ready(ready_read)
        future = asyncio.get_running_loop().create_future()
        task.watch_child(process, future)
        return task, future

    def recover(
        self, request: TaskRequest, state: dict[str, object]
    ) -> tuple[ProcessTask, asyncio.Future[ExitResult]]:
        """Re-attach to a shim that an earlier plugin process started.

        Raises DriverError when the state names no shim, or when the shim
        is gone without leaving a result.
        """
        task = ProcessTask.from_state(request, state)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ExitResult] = loop.create_future()
        if task.attach(future):
            return task, future

        result = read_result(task.result_path)
        if result is None:
            raise DriverError(
                f"cannot recover task {request.id!r}: its process {task.pid} is "
                "gone and left no exit result; Nomad will start it again"
            )
        future.set_result(result)
        return task, future

    def close(self) -> None:
        """Nothing to release: shims keep running, and a new plugin recovers them."""

    def _prepare_files(self, request: TaskRequest) -> Path:
        try:
            self._state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise DriverError(
                f"failed to create the task state directory {self._state_dir}: "
                f"{err.strerror}; make it writable for the plugin"
            ) from err
        stem = task_file_stem(self._state_dir, request.id)
        # A result left by an earlier run with this id would be read as ours.
        stem.with_suffix(".result").unlink(missing_ok=True)
        return stem


def _spawn(
    start_path: Path, ready_fd: int, logs: tuple[BinaryIO, BinaryIO]
) -> subprocess.Popen[bytes]:
    # A new session: the task survives the plugin and a Ctrl-C to the agent's
    # process group, and a stop signals its group alone. Its own stdin and
    # log FIFOs: a child holding the plugin's stdout or stderr would keep
    # go-plugin from seeing the plugin exit. Popen and not an asyncio
    # subprocess, because asyncio kills a running child when its transport
    # closes, which would end every task when the plugin exits.
    return subprocess.Popen(
        [sys.executable, "-m", SHIM_MODULE, str(start_path), str(ready_fd)],
        stdin=subprocess.DEVNULL,
        stdout=logs[0],
        stderr=logs[1],
        start_new_session=True,
        close_fds=True,
        pass_fds=(ready_fd,),
    )
