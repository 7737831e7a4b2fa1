"""Running tasks: the `thread` isolation mode.

Each task runs on a thread of the plugin process, which gives the
lowest start latency. A task is stopped through its Interrupt, which traps
the running WebAssembly within a few milliseconds without touching other
tasks. Tasks end with the plugin process, so none survive a plugin restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import wasmtime

from .cache import ModuleCache
from .engine import Interrupt
from .errors import DriverError
from .handle import ExitResult, TaskRequest, TaskUsage
from .logfiles import open_logs
from .settings import TaskConfig
from .task_run import TaskRuntime, run_request

log = logging.getLogger(__name__)


@dataclass
class RunningTask:
    """A task on its worker thread; the thread fills in `native_id`."""

    request: TaskRequest
    interrupt: Interrupt = field(default_factory=Interrupt)
    stop_signal: int = 0
    native_id: int | None = None
    _last_sample: tuple[float, float] | None = None

    def stop(self, signal_number: int) -> None:
        if not self.stop_signal:
            self.stop_signal = signal_number
        self.interrupt.request()

    def kill(self) -> bool:
        """Return False: nothing ends a thread stuck in a host call sooner.

        `stop` already requested the Interrupt, which ends the task as soon
        as it runs WebAssembly again.
        """
        return False

    def state(self) -> dict[str, object]:
        """Return what Nomad's task handle stores for this task."""
        return {"isolation": "thread"}

    def release(self) -> None:
        """Do nothing: the task's thread released everything when it ended."""

    def usage(self) -> TaskUsage:
        """Sample the CPU time of the task's thread."""
        now = time.monotonic()
        user, system = _thread_times(self.native_id)
        percent = 0.0
        if self._last_sample is not None:
            last_time, last_cpu = self._last_sample
            if now > last_time:
                percent = 100.0 * (user + system - last_cpu) / (now - last_time)
        self._last_sample = (now, user + system)
        return TaskUsage(time.time(), user, system, max(percent, 0.0))


class ThreadExecutor:
    """Starts each task on a thread of its own and reports how it ended.

    A thread per task, not a pool: a pool keeps its peak number of threads
    forever, while these end with their task, so an idle plugin returns to
    its idle thread count after any burst.
    """

    def __init__(self, engine: wasmtime.Engine, cache: ModuleCache, cwd: Path) -> None:
        self._runtime = TaskRuntime(engine, cache, cwd)

    async def start(
        self, request: TaskRequest, config: TaskConfig
    ) -> tuple[RunningTask, asyncio.Future[ExitResult]]:
        """Open the task's logs and start it; raises LogOpenError if they fail."""
        stdout, stderr = await open_logs(request.stdout_path, request.stderr_path)
        task = RunningTask(request)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ExitResult] = loop.create_future()

        def run() -> None:
            result = self._run(task, config, stdout, stderr)
            _resolve_threadsafe(loop, future, result)

        # Not a daemon: the plugin server exits at once, with a warning, when
        # task threads are still running at shutdown.
        thread = threading.Thread(target=run, name=f"task {request.name}")
        thread.start()
        return task, future

    def recover(
        self, request: TaskRequest, state: dict[str, object]
    ) -> tuple[RunningTask, asyncio.Future[ExitResult]]:
        """Raise DriverError: a thread task ends with the process that ran it.

        Claiming the task would leave Nomad waiting on a task that no longer
        runs.
        """
        raise DriverError(
            f"cannot recover task {request.id!r}: it ran inside an earlier plugin "
            "process and ended with it; Nomad will start it again"
        )

    def close(self) -> None:
        """Nothing to release: running tasks keep their threads until they end."""

    def _run(
        self, task: RunningTask, config: TaskConfig, stdout: BinaryIO, stderr: BinaryIO
    ) -> ExitResult:
        task.native_id = threading.get_native_id()
        _lower_priority(task.native_id)
        try:
            return run_request(
                self._runtime,
                task.request,
                config,
                task.interrupt,
                (stdout, stderr),
                lambda: task.stop_signal,
            )
        finally:
            _close_quietly(stdout)
            _close_quietly(stderr)


# Task threads run at a lower CPU priority than the plugin's event loop, so
# that modules spinning on every core cannot starve Nomad's RPCs. Linux
# applies setpriority to a single thread when given its thread id.
TASK_THREAD_NICENESS = 10


def _lower_priority(native_id: int) -> None:
    try:
        current = os.getpriority(os.PRIO_PROCESS, native_id)
        os.setpriority(os.PRIO_PROCESS, native_id, current + TASK_THREAD_NICENESS)
    except OSError as err:
        log.debug("cannot lower task thread priority", extra={"error": str(err)})


def _resolve_threadsafe(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[ExitResult],
    result: ExitResult,
) -> None:
    def resolve() -> None:
        if not future.done():
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:
        pass  # the event loop has closed: the plugin is exiting


def _close_quietly(file: BinaryIO) -> None:
    try:
        file.close()
    except OSError:
        pass


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _thread_times(native_id: int | None) -> tuple[float, float]:
    """Return a thread's user and system CPU seconds from /proc.

    psutil lists every thread of the process to find one, which costs
    O(threads) per sample; this reads the one thread's stat file.
    """
    if native_id is None:
        return 0.0, 0.0
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return 0.0, 0.0
    # The command name in brackets may contain spaces, so split after it.
    fields = text[text.rindex(b")") + 2 :].split()
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS
