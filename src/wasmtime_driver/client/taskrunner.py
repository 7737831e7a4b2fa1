"""Running one task through the driver, in the order Nomad's task runner uses.

Log collection first (the FIFOs are read before StartTask), then the config
is decoded against TaskConfigSchema with the task's environment as variables,
then StartTask, WaitTask and a TaskStats stream while the task runs. On a
stop request: StopTask with the task's kill_timeout and kill_signal. After
the exit: DestroyTask(force=true), and the log readers run to EOF.

Every wait on the plugin during a stop is bounded, so a stuck plugin or task
cannot keep the command from exiting after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from .. import hclspec
from ..ctymsgpack import marshal
from ..hcldec import DecodeError, InvalidSpecError, decode, task_variables
from ..jobspec import Task
from ..protocol import driver_pb2
from .agentconfig import AgentConfig
from .logmon import TaskLogs
from .pluginlog import write_stderr
from .rpcerror import describe_rpc_error
from .taskenv import Allocation, build_task_config, task_environment

logger = logging.getLogger(__name__)

# Nomad caps a task's kill_timeout at the client's max_kill_timeout.
MAX_KILL_TIMEOUT = 30.0  # seconds
# The client's telemetry collection_interval default.
STATS_INTERVAL = 1.0  # seconds
# NOTE: logmon waits for EOF without limit; this bound keeps the command from
# hanging on a plugin that never closes a task's FIFO.
LOG_EOF_TIMEOUT = 10.0  # seconds
# NOTE: these bounds are estimates. They leave room beyond the kill timeout
# and the 5 s that the plugin's forced DestroyTask waits, then give up on a
# stuck plugin or task.
STOP_RPC_MARGIN = 5.0  # seconds added to the kill timeout
DESTROY_RPC_TIMEOUT = 10.0  # seconds
EXIT_AFTER_STOP_TIMEOUT = 5.0  # seconds
# Exit status for a task that never ran (invalid config or a failed start) or
# that did not exit after StopTask and a forced DestroyTask.
FAILED_TO_START = 1
FAILED_TO_STOP = 1
# The signal the plugin sends when a job sets no kill_signal, as Nomad's
# executor does.
DEFAULT_KILL_SIGNAL = "SIGINT"
# hcldec's message for the null config that Nomad sends when a task's config
# block is missing or empty, with a hint for this driver.
MISSING_CONFIG_MESSAGE = (
    "Root value must be object; The root value in a JSON-based configuration "
    "must be either a JSON object or a JSON array of objects. The task has no "
    "config block or an empty one: add a config block with at least "
    'modulePath, e.g. config { modulePath = "app.wasm" }'
)

_STDOUT_LOCK = threading.Lock()


def write_stdout(data: bytes) -> None:
    """Copy task output to our stdout as it arrives."""
    with _STDOUT_LOCK:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def write_stderr_bytes(data: bytes) -> None:
    """Copy task error output to our stderr as it arrives."""
    write_stderr(data.decode("utf-8", "replace"))


class Progress:
    """Short status lines on stderr in the style of Nomad's CLI."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            write_stderr(f"==> {message}\n")

    def error(self, message: str) -> None:
        write_stderr(f"==> {message}\n")


@dataclass
class TaskOutcome:
    """The end state of a task; `exit_code` is what the run command exits with."""

    exit_code: int
    started: bool
    # False when the run gave up on a task that did not exit after a stop.
    exited: bool = True


class TaskRunner:
    """Runs one task of an allocation through a long-lived driver instance."""

    def __init__(
        self,
        driver: Any,
        task_spec: hclspec.Spec,
        alloc: Allocation,
        task: Task,
        agent: AgentConfig,
        progress: Progress,
        stop_requested: asyncio.Event,
    ) -> None:
        self.driver = driver
        self.task_spec = task_spec
        self.alloc = alloc
        self.task = task
        self.agent = agent
        self.progress = progress
        self.stop_requested = stop_requested
        self.task_id = ""
        self._destroyed = False

    async def run(self) -> TaskOutcome:
        logs = self._start_logs()
        outcome = TaskOutcome(FAILED_TO_START, started=False)
        try:
            outcome = await self._run_with_logs()
        finally:
            if logs is not None:
                await self._finish_logs(logs, outcome.started and outcome.exited)
        return outcome

    def _start_logs(self) -> TaskLogs | None:
        if self.task.logs_disabled:
            return None
        alloc_dir = self.alloc.alloc_dir
        stdout_fifo, stderr_fifo = alloc_dir.create_fifos(self.task.name)
        logs = TaskLogs(
            self.task.name,
            alloc_dir.logs_dir,
            stdout_fifo,
            stderr_fifo,
            stdout_sinks=[write_stdout],
            stderr_sinks=[write_stderr_bytes],
        )
        logs.start()
        return logs

    async def _finish_logs(self, logs: TaskLogs, exited: bool) -> None:
        if not exited:
            # Either the task never ran, so no writer has the FIFOs open, or
            # it did not exit and that error is already reported. The readers
            # stop at once, after copying the output already buffered.
            await asyncio.to_thread(logs.wait, 0.0)
            return
        if not await asyncio.to_thread(logs.wait, LOG_EOF_TIMEOUT):
            logger.warning(
                "task log FIFO not closed by the plugin; stopped reading it",
                extra={"task_name": self.task.name, "timeout": LOG_EOF_TIMEOUT},
            )

    async def _run_with_logs(self) -> TaskOutcome:
        env = task_environment(self.alloc, self.task, self.agent)
        driver_config = self._encode_config(env)
        if driver_config is None:
            return TaskOutcome(FAILED_TO_START, started=False)
        task_config = build_task_config(
            self.alloc, self.task, self.agent, env, driver_config
        )
        self.task_id = task_config.id
        try:
            await self.driver.StartTask(driver_pb2.StartTaskRequest(task=task_config))
        except grpc.aio.AioRpcError as err:
            self.progress.error(
                f'task "{self.task.name}" failed to start: {describe_rpc_error(err)}'
            )
            return TaskOutcome(FAILED_TO_START, started=False)
        self.progress.info(f'task "{self.task.name}" started')
        try:
            response = await self._wait_with_stats()
        finally:
            if not self._destroyed:
                await self._destroy()
        if response is None:
            self.progress.error(
                f'task "{self.task.name}" did not exit after StopTask and a forced '
                "DestroyTask; gave up waiting for it"
            )
            return TaskOutcome(FAILED_TO_STOP, started=True, exited=False)
        return TaskOutcome(self._report_exit(response), started=True)

    def _encode_config(self, env: dict[str, str]) -> bytes | None:
        if self.task.config is None:
            self.progress.error(
                f'task "{self.task.name}" failed validation: '
                f"failed to parse config: {MISSING_CONFIG_MESSAGE}"
            )
            return None
        try:
            value = decode(self.task_spec, self.task.config, task_variables(env))
        except (DecodeError, InvalidSpecError) as err:
            self.progress.error(
                f'task "{self.task.name}" failed validation: '
                f"failed to parse config:{_diagnostics_text(err)}"
            )
            return None
        return marshal(value)

    async def _wait_with_stats(self) -> driver_pb2.WaitTaskResponse | None:
        """Wait for the exit, stopping the task on request.

        Returns None when the task did not exit after a stop.
        """
        wait = asyncio.ensure_future(
            self.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=self.task_id))
        )
        stats = asyncio.create_task(self._follow_stats())
        stop = asyncio.create_task(self.stop_requested.wait())
        try:
            await asyncio.wait([wait, stop], return_when=asyncio.FIRST_COMPLETED)
            if not wait.done():
                await self._stop()
                return await self._wait_after_stop(wait)
            return _wait_result(wait)
        finally:
            for pending in (wait, stats, stop):
                pending.cancel()
            await asyncio.gather(wait, stats, stop, return_exceptions=True)

    async def _follow_stats(self) -> None:
        """Read TaskStats like Nomad's stats hook, re-opening a failed stream."""
        interval = Duration()
        interval.FromMilliseconds(int(STATS_INTERVAL * 1000))
        request = driver_pb2.TaskStatsRequest(
            task_id=self.task_id, collection_interval=interval
        )
        while True:
            call = self.driver.TaskStats(request)
            try:
                async for response in call:
                    _check_stats(response)
            except grpc.aio.AioRpcError as err:
                logger.warning(
                    "TaskStats failed",
                    extra={"task_id": self.task_id, "error": describe_rpc_error(err)},
                )
            finally:
                call.cancel()
            await asyncio.sleep(STATS_INTERVAL)

    async def _wait_after_stop(
        self, wait: asyncio.Future[driver_pb2.WaitTaskResponse]
    ) -> driver_pb2.WaitTaskResponse | None:
        """Wait for the exit after StopTask, forcing DestroyTask if it is late."""
        await asyncio.wait([wait], timeout=EXIT_AFTER_STOP_TIMEOUT)
        if not wait.done():
            self.progress.error(
                f'task "{self.task.name}" still running '
                f"{EXIT_AFTER_STOP_TIMEOUT:g}s after StopTask; destroying it"
            )
            await self._destroy()
            await asyncio.wait([wait], timeout=EXIT_AFTER_STOP_TIMEOUT)
        if not wait.done():
            return None
        return _wait_result(wait)

    async def _stop(self) -> None:
        timeout = min(self.task.kill_timeout_s, MAX_KILL_TIMEOUT)
        duration = Duration()
        duration.FromNanoseconds(int(timeout * 1e9))
        kill_signal = self.task.kill_signal or DEFAULT_KILL_SIGNAL
        self.progress.info(
            f'stopping task "{self.task.name}" '
            f"(signal {kill_signal}, timeout {timeout:g}s)"
        )
        request = driver_pb2.StopTaskRequest(
            task_id=self.task_id, timeout=duration, signal=self.task.kill_signal
        )
        try:
            await self.driver.StopTask(request, timeout=timeout + STOP_RPC_MARGIN)
        except grpc.aio.AioRpcError as err:
            self.progress.error(
                f'failed to stop task "{self.task.name}": {describe_rpc_error(err)}'
            )

    async def _destroy(self) -> None:
        self._destroyed = True
        request = driver_pb2.DestroyTaskRequest(task_id=self.task_id, force=True)
        try:
            await self.driver.DestroyTask(request, timeout=DESTROY_RPC_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            # Nomad only logs a failed DestroyTask.
            logger.warning(
                "DestroyTask failed",
                extra={"task_id": self.task_id, "error": describe_rpc_error(err)},
            )

    def _report_exit(self, response: driver_pb2.WaitTaskResponse) -> int:
        result = response.result
        code = exit_code_of(response)
        if response.err:
            self.progress.error(f'task "{self.task.name}" failed: {response.err}')
        elif result.signal:
            self.progress.error(
                f'task "{self.task.name}" killed by signal {_signal_name(result.signal)}'
            )
        elif result.exit_code:
            self.progress.error(
                f'task "{self.task.name}" exited with code {result.exit_code}'
            )
        else:
            self.progress.info(f'task "{self.task.name}" exited with code 0')
        return code


def exit_code_of(response: driver_pb2.WaitTaskResponse) -> int:
    """Return our exit status for a task result; non-zero whenever Nomad fails it.

    Nomad counts a task as successful only with exit code 0, no signal and
    no `err`.
    """
    result = response.result
    if result.exit_code:
        return result.exit_code & 0xFF or 1
    if result.signal:
        return 128 + result.signal
    if response.err:
        return 1
    return 0


def _wait_result(
    wait: asyncio.Future[driver_pb2.WaitTaskResponse],
) -> driver_pb2.WaitTaskResponse:
    """Return a finished WaitTask's response, a failed call as the task's error."""
    try:
        return wait.result()
    except grpc.aio.AioRpcError as err:
        # A plugin that crashed or closed the connection ends the call this
        # way; the task counts as failed, so the command exits non-zero.
        return driver_pb2.WaitTaskResponse(
            err=f"WaitTask failed: {describe_rpc_error(err)}"
        )


def _diagnostics_text(err: Exception) -> str:
    diagnostics = getattr(err, "diagnostics", None) or [str(err)]
    if len(diagnostics) == 1:
        return f" {diagnostics[0]}"
    return "".join(f"\n    * {diagnostic}" for diagnostic in diagnostics)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _check_stats(response: driver_pb2.TaskStatsResponse) -> None:
    # A Nomad client dereferences these fields, so a sample without them
    # crashes the agent.
    if not response.HasField("stats") or not response.stats.HasField(
        "agg_resource_usage"
    ):
        logger.error("TaskStats sent a sample without stats.agg_resource_usage")
    elif not response.stats.HasField("timestamp"):
        logger.warning("TaskStats sent a sample without a timestamp; Nomad drops it")
