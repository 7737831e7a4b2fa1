"""The task manager: the table of tasks and their lifecycle.

It runs on the event loop only. The servicer translates each Nomad RPC into
one call here, and the executor runs the task itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Protocol

from .config import decode_task_config
from .errors import DriverError, TaskNotFoundError
from .events import EventBroker, TaskEvent
from .handle import ExitResult, TaskHandle, TaskRequest, TaskUsage
from .settings import TaskConfig

log = logging.getLogger(__name__)

# Nomad's executor sends SIGINT when a job sets no kill_signal.
DEFAULT_STOP_SIGNAL = "SIGINT"
# How long a task may take to end after SIGKILL before stop gives up waiting.
KILL_WAIT = 5.0


class RunningTask(Protocol):
    """A started task, as each isolation mode's executor returns it."""

    def stop(self, signal_number: int) -> None: ...

    def kill(self) -> bool:
        """Kill the task outright; return False when its mode cannot."""
        ...

    def usage(self) -> TaskUsage: ...

    def state(self) -> dict[str, object]: ...

    def release(self) -> None: ...


class Executor(Protocol):
    """Runs tasks in one isolation mode; see ThreadExecutor and ProcessExecutor."""

    async def start(
        self, request: TaskRequest, config: TaskConfig
    ) -> tuple[RunningTask, asyncio.Future[ExitResult]]: ...

    def recover(
        self, request: TaskRequest, state: dict[str, object]
    ) -> tuple[RunningTask, asyncio.Future[ExitResult]]: ...

    def close(self) -> None: ...


class TaskManager:
    """Owns every task of this plugin process, keyed by Nomad's task id."""

    def __init__(self, executor: Executor, events: EventBroker) -> None:
        self._executor = executor
        self._events = events
        self._handles: dict[str, TaskHandle] = {}
        self._running: dict[str, RunningTask] = {}
        self._starting: dict[str, asyncio.Future[TaskHandle]] = {}

    def close(self) -> None:
        """Release the executor's idle worker threads; running tasks go on."""
        self._executor.close()

    def __len__(self) -> int:
        return len(self._handles)

    def get(self, task_id: str) -> TaskHandle:
        try:
            return self._handles[task_id]
        except KeyError:
            raise TaskNotFoundError(task_id) from None

    async def start(self, request: TaskRequest) -> TaskHandle:
        """Start a task; raises ConfigError, LogOpenError or DriverError.

        Nomad may send the same StartTask twice at once. The second call
        waits for the first, because starting awaits the log FIFOs and a
        second start in that window would run the task twice.
        """
        if request.id in self._handles:
            return self._handles[request.id]
        starting = self._starting.get(request.id)
        if starting is not None:
            return await asyncio.shield(starting)

        starting = asyncio.get_running_loop().create_future()
        self._starting[request.id] = starting
        try:
            handle = await self._start(request)
        except BaseException as err:
            starting.set_exception(err)
            starting.exception()  # retrieved here, so an unwaited failure is quiet
            raise
        finally:
            del self._starting[request.id]
        starting.set_result(handle)
        return handle

    async def _start(self, request: TaskRequest) -> TaskHandle:
        config = decode_task_config(request.driver_config)
        running, future = await self._executor.start(request, config)
        handle = TaskHandle(request, config)
        self._track(handle, running, future)

        log.info(
            "task started",
            extra=_task_fields(request) | {"module_path": config.module_path},
        )
        self._publish(request, f"started module {config.module_path}")
        return handle

    def recover(
        self, request: TaskRequest, config: TaskConfig, state: dict[str, object]
    ) -> None:
        """Re-attach to a task from Nomad's persisted handle; raises DriverError.

        A task in this process's table is accepted as it is. Any other task is
        handed to the executor, which raises when it cannot find it running
        or its exit result.
        """
        if request.id in self._handles:
            return
        running, future = self._executor.recover(request, state)
        handle = TaskHandle(request, config)
        started_at = state.get("started_at")
        if isinstance(started_at, float):
            handle.started_at = started_at
        self._track(handle, running, future)
        log.info("task recovered", extra=_task_fields(request))

    def _track(
        self,
        handle: TaskHandle,
        running: RunningTask,
        future: asyncio.Future[ExitResult],
    ) -> None:
        handle.executor_state = running.state()
        self._handles[handle.id] = handle
        self._running[handle.id] = running
        future.add_done_callback(lambda f: self._on_exit(handle, f))

    async def _start_settled(self, task_id: str) -> None:
        """Wait for a StartTask of `task_id` still in progress, whatever its outcome.

        A stop or destroy that arrives while the start awaits the log FIFOs
        would otherwise find no task, return, and let the task start after.
        """
        starting = self._starting.get(task_id)
        if starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(starting)

    async def wait(self, task_id: str) -> ExitResult:
        await self._start_settled(task_id)
        handle = self.get(task_id)
        await handle.done.wait()
        assert handle.result is not None
        return handle.result

    async def stop(self, task_id: str, timeout: float, signal_name: str) -> None:
        """Stop a task with a signal, and kill it if it runs after `timeout` seconds.

        WebAssembly cannot catch a signal, so the signal only decides how the
        exit is reported; the task is interrupted at once either way.
        """
        await self._start_settled(task_id)
        handle = self._handles.get(task_id)
        running = self._running.get(task_id)
        if handle is None or running is None or handle.done.is_set():
            return

        # No task event: Nomad's task runner records the kill itself.
        running.stop(_signal_number(signal_name or DEFAULT_STOP_SIGNAL))
        if await _wait_done(handle, timeout):
            return
        log.warning(
            "task did not stop within its kill timeout",
            extra=_task_fields(handle.request) | {"timeout": timeout},
        )
        if running.kill() and not await _wait_done(handle, KILL_WAIT):
            log.warning(
                "task still runs after SIGKILL", extra=_task_fields(handle.request)
            )

    async def destroy(self, task_id: str, force: bool) -> None:
        await self._start_settled(task_id)
        handle = self._handles.get(task_id)
        if handle is None:
            return
        if not handle.done.is_set():
            if not force:
                raise _StillRunningError(task_id)
            await self.stop(task_id, 5.0, "SIGKILL")
        self._handles.pop(task_id, None)
        running = self._running.pop(task_id, None)
        if running is not None:
            running.release()
        log.info("task destroyed", extra=_task_fields(handle.request))

    async def usage(self, task_id: str, interval: float) -> AsyncIterator[TaskUsage]:
        """Yield a sample at once, then one per interval while the task runs."""
        handle = self.get(task_id)
        running = self._running[task_id]
        while True:
            yield running.usage()
            if handle.done.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handle.done.wait(), interval)

    def _on_exit(self, handle: TaskHandle, future: asyncio.Future[ExitResult]) -> None:
        if future.cancelled():
            result = ExitResult(exit_code=1, err="task was cancelled")
        elif future.exception() is not None:
            result = ExitResult(exit_code=1, err=f"task failed: {future.exception()}")
        else:
            result = future.result()
        handle.finish(result)

        fields = _task_fields(handle.request) | {
            "exit_code": result.exit_code,
            "signal": result.signal,
        }
        # No task event here: Nomad's task runner records the exit itself.
        if result.err:
            log.info("task failed", extra=fields | {"error": result.err})
        else:
            log.info("task exited", extra=fields)

    def _publish(self, request: TaskRequest, message: str) -> None:
        self._events.publish(
            TaskEvent(request.id, request.alloc_id, request.name, message)
        )


class _StillRunningError(DriverError):
    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"cannot destroy task {task_id!r} while it runs: stop it first or "
            "destroy it with force"
        )


async def _wait_done(handle: TaskHandle, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(handle.done.wait(), max(timeout, 0.001))
    return handle.done.is_set()


def _signal_number(name: str) -> int:
    """Return the number of a signal given by name (SIGTERM, TERM) or number."""
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        if number in signal.valid_signals():
            return number
    else:
        if not text.startswith("SIG"):
            text = "SIG" + text
        if text in signal.Signals.__members__:
            return int(signal.Signals[text])
    log.warning("unknown stop signal, using SIGINT instead", extra={"signal": name})
    return int(signal.SIGINT)


def _task_fields(request: TaskRequest) -> dict[str, object]:
    return {
        "task_id": request.id,
        "alloc_id": request.alloc_id,
        "task_name": request.name,
    }
