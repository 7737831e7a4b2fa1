"""Running tasks: the `process` isolation mode.

Each task runs in an OS process of its own, in a new session, so its process
group can be signalled as a whole and it keeps running when the plugin exits.
The zygote (`wasmtime_driver.zygote`), which has already imported wasmtime
and the driver, forks these processes. When no zygote can be started, each
task runs in a fresh interpreter, the shim (`wasmtime_driver.shim`). A new
plugin process re-attaches to a task with `recover`, using the pid and start
time from Nomad's task handle. The task process writes its exit result to a
file, because the plugin is not its parent when the zygote forked it or after
a plugin restart, and then cannot read its exit status.
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
from .zygote_client import ZygoteLauncher

SHIM_MODULE = "wasmtime_driver.shim"


class ProcessExecutor:
    """Starts each task as a process of its own and reports how it ended.

    `state_dir` contains the start and result files of this plugin's tasks.
    """

    def __init__(
        self, cache: CacheSettings, cache_dir: Path, state_dir: Path, cwd: Path
    ) -> None:
        self._cache = cache
        self._cache_dir = cache_dir
        self._state_dir = state_dir
        self._cwd = cwd
        self._zygote = ZygoteLauncher()
        self._zygote.start()

    async def start(
        self, request: TaskRequest, config: TaskConfig
    ) -> tuple[ProcessTask, asyncio.Future[ExitResult]]:
        """Open the task's logs and start its process; raises LogOpenError or DriverError."""
        stem = self._prepare_files(request)
        result_path = stem.with_suffix(".result")
        start_path = stem.with_suffix(".start")
        start = ShimStart(request, self._cache, self._cache_dir, self._cwd, result_path)
        write_start(start_path, start)

        stdout, stderr = await open_logs(request.stdout_path, request.stderr_path)
        try:
            # The task process gets its own copies of the logs. The plugin's
            # would keep the log FIFOs open after the task exits, and Nomad's
            # logmon waits for EOF, so the finally clause closes them.
            forked = await self._zygote.fork(
                start_path, (stdout.fileno(), stderr.fileno())
            )
            if forked is None:
                return self._spawn_shim(
                    request, start_path, result_path, stdout, stderr
                )
        except BaseException:
            start_path.unlink(missing_ok=True)
            raise
        finally:
            stdout.close()
            stderr.close()

        task = ProcessTask.started(request, forked.pid, result_path)
        future = asyncio.get_running_loop().create_future()
        task.watch_forked(forked.pidfd, future)
        return task, future

    def _spawn_shim(
        self,
        request: TaskRequest,
        start_path: Path,
        result_path: Path,
        stdout: BinaryIO,
        stderr: BinaryIO,
    ) -> tuple[ProcessTask, asyncio.Future[ExitResult]]:
        ready_read, ready_write = os.pipe()
        try:
            process = _spawn(start_path, ready_write, (stdout, stderr))
        except OSError as err:
            os.close(ready_read)
            raise DriverError(f"failed to start the task process: {err}") from err
        finally:
            os.close(ready_write)

        task = ProcessTask.started(request, process.pid, result_path)
        task.watch_ready(ready_read)
        future = asyncio.get_running_loop().create_future()
        task.watch_child(process, future)
        return task, future

    def recover(
        self, request: TaskRequest, state: dict[str, object]
    ) -> tuple[ProcessTask, asyncio.Future[ExitResult]]:
        """Re-attach to a task process that an earlier plugin process started.

        Raises DriverError when the state names no task process, or when the
        process is gone without leaving a result.
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
        """Stop the zygote; running task processes go on, and a new plugin recovers them."""
        self._zygote.close()

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
