"""One task running in a process of its own, as the process executor tracks it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from .errors import DriverError
from .handle import ExitResult, TaskRequest, TaskUsage
from .shim_files import read_result

log = logging.getLogger(__name__)

# psutil derives start times from clock ticks since boot; two reads of one
# process agree far more closely than this.
_START_TIME_TOLERANCE = 0.05


class ProcessTask:
    """A task process: stop, kill and sample it, and store how to find it again.

    The pid is also the process group id, because the task process starts a
    session.
    """

    def __init__(
        self, request: TaskRequest, pid: int, start_time: float, result_path: Path
    ) -> None:
        self.request = request
        self.pid = pid
        self.start_time = start_time
        self.result_path = result_path
        self.stop_signal = 0
        self._killed = False
        self._ready = False
        self._exited = False
        self._process: psutil.Process | None = None

    @classmethod
    def started(cls, request: TaskRequest, pid: int, result_path: Path) -> ProcessTask:
        try:
            process = psutil.Process(pid)
            start_time = process.create_time()
        except psutil.Error:
            # The shim already exited; the executor's wait reports how.
            return cls(request, pid, 0.0, result_path)
        task = cls(request, pid, start_time, result_path)
        task._process = process
        return task

    @classmethod
    def from_state(cls, request: TaskRequest, state: dict[str, object]) -> ProcessTask:
        """Rebuild a task from Nomad's driver_state; raises DriverError."""
        pid = state.get("pid")
        start_time = state.get("process_start_time")
        result_path = state.get("result_path")
        if (
            state.get("isolation") != "process"
            or not isinstance(pid, int)
            or not isinstance(start_time, float)
            or not isinstance(result_path, str)
        ):
            raise DriverError(
                f"cannot recover task {request.id!r}: its handle names no task "
                "process (it ran inside an earlier plugin process and ended with "
                "it); Nomad will start it again"
            )
        return cls(request, pid, start_time, Path(result_path))

    def state(self) -> dict[str, object]:
        """Return what Nomad's task handle stores to find the process again."""
        return {
            "isolation": "process",
            "pid": self.pid,
            "process_start_time": self.start_time,
            "result_path": str(self.result_path),
        }

    def watch_ready(self, fd: int) -> None:
        """Wait, without blocking, for the shim's byte that reports it handles stops."""
        loop = asyncio.get_running_loop()

        def on_readable() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._ready = True
            if self.stop_signal:
                self._signal_group(self.stop_signal)

        loop.add_reader(fd, on_readable)

    def watch_child(
        self, process: subprocess.Popen[bytes], future: asyncio.Future[ExitResult]
    ) -> None:
        """Resolve `future` with the exit result of a shim this process started."""
        pidfd = os.pidfd_open(process.pid)

        def on_exit() -> None:
            status = process.wait()  # reaps it: the readable pidfd means it has exited
            _resolve(future, self._child_result(status))

        self._watch_exit(pidfd, on_exit)

    def watch_forked(self, pidfd: int, future: asyncio.Future[ExitResult]) -> None:
        """Resolve `future` with the exit result of a process the zygote forked.

        The zygote forks with the stop signals blocked, so the process holds
        a stop signal until its sigwait thread takes it: it is ready at once.
        """
        self._ready = True
        self._watch_exit(pidfd, lambda: _resolve(future, self._file_result()))

    def attach(self, future: asyncio.Future[ExitResult]) -> bool:
        """Track a task process this plugin did not start; False if it is not running.

        A pidfd pins the pid, so once the start time matches, a later exit
        and pid reuse cannot make the plugin watch another process.
        """
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return False
        if not self._same_process():
            os.close(pidfd)
            return False
        self._ready = True  # it ran long enough to be handed to Nomad
        self._watch_exit(pidfd, lambda: _resolve(future, self._file_result()))
        return True

    def _watch_exit(self, pidfd: int, on_exit: Callable[[], None]) -> None:
        # A pidfd becomes readable when its process exits.
        loop = asyncio.get_running_loop()

        def on_readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._exited = True
            on_exit()

        loop.add_reader(pidfd, on_readable)

    def stop(self, signal_number: int) -> None:
        """Send a stop signal to the task's process group, once it can handle it.

        SIGKILL needs no handler, so it is sent at once.
        """
        if not self.stop_signal:
            self.stop_signal = signal_number
        if self._ready or signal_number == signal.SIGKILL:
            self._signal_group(signal_number)

    def kill(self) -> bool:
        """Send SIGKILL to the task's process group."""
        self._killed = True
        self._signal_group(signal.SIGKILL)
        return True

    def release(self) -> None:
        # NOTE: only DestroyTask removes the result file, so a task that Nomad
        # never destroys leaves a small file in the state directory.
        self.result_path.unlink(missing_ok=True)

    def usage(self) -> TaskUsage:
        """Sample CPU time and resident memory of the task process with psutil."""
        now = time.time()
        process = self._process
        if process is None or self._exited:
            return TaskUsage(now)
        try:
            with process.oneshot():
                cpu = process.cpu_times()
                memory = process.memory_info()
                # The first call returns 0.0; later ones cover the interval
                # since the previous call.
                percent = process.cpu_percent(interval=None)
        except psutil.Error:
            return TaskUsage(now)
        return TaskUsage(now, cpu.user, cpu.system, percent, memory.rss)

    def _signal_group(self, signal_number: int) -> None:
        if self._exited:
            return
        try:
            os.killpg(self.pid, signal_number)
        except ProcessLookupError:
            pass  # exited just now; the wait reports it
        except PermissionError as err:
            log.warning(
                "failed to signal task process",
                extra={"task_id": self.request.id, "pid": self.pid, "error": str(err)},
            )

    def _same_process(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            start_time = process.create_time()
            zombie = process.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
        if zombie or abs(start_time - self.start_time) > _START_TIME_TOLERANCE:
            return False
        self._process = process
        return True

    def _child_result(self, status: int) -> ExitResult:
        if status < 0:
            number = -status
            return ExitResult(exit_code=128 + number, signal=number)
        result = read_result(self.result_path)
        if result is not None:
            return result
        message = f"task process exited with status {status} without an exit result"
        return ExitResult(exit_code=status or 1, err=message)

    def _file_result(self) -> ExitResult:
        result = read_result(self.result_path)
        if result is not None:
            return result
        # Not the parent, so the exit status is unknown. A task process leaves
        # no result when a signal it does not handle, such as SIGKILL, ends it,
        # so the signal that the plugin sent is the likely cause.
        number = int(signal.SIGKILL) if self._killed else self.stop_signal
        if number:
            return ExitResult(exit_code=128 + number, signal=number)
        return ExitResult(exit_code=1, err="task process ended without an exit result")


def _resolve(future: asyncio.Future[ExitResult], result: ExitResult) -> None:
    if not future.done():
        future.set_result(result)
