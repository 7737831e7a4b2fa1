"""Running one task through the driver, in the order Nomad's task runner uses.

Log collection first (the FIFOs are read before StartTask), then the config
is decoded against TaskConfigSchema with the task's environment as variables,
then StartTask, WaitTask and a TaskStats stream while the task runs. On a
stop request: StopTask with the task's kill_timeout and kill_signal. After
the exit: DestroyTask(force=true), and the log readers run to EOF.
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
FAILED_START_LOG_TIMEOUT = 1.0  # seconds
# Exit status for a task that never ran: invalid config or a failed start.
FAILED_TO_START = 1

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

    async def run(self) -> TaskOutcome:
        logs = self._start_logs()
        outcome = TaskOutcome(FAILED_TO_START, started=False)
        try:
            outcome = await self._run_with_logs()
        finally:
            if logs is not None:
                await self._finish_logs(logs, self._log_eof_timeout(outcome))
        return outcome

    def _log_eof_timeout(self, outcome: TaskOutcome) -> float:
        if outcome.started:
            return LOG_EOF_TIMEOUT
        # A failed StartTask may have opened and closed the FIFOs; without
        # a StartTask call no driver ever opens them.
        return FAILED_START_LOG_TIMEOUT if self.task_id else 0.0

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

    async def _finish_logs(self, logs: TaskLogs, timeout: float) -> None:
        if not await asyncio.to_thread(logs.wait, timeout) and timeout:
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
            await self._destroy()
        return TaskOutcome(self._report_exit(response), started=True)

    def _encode_config(self, env: dict[str, str]) -> bytes | None:
        try:
            value = decode(self.task_spec, self.task.config, task_variables(env))
        except (DecodeError, InvalidSpecError) as err:
            self.progress.error(
                f'task "{self.task.name}" failed validation: '
                f"failed to parse config:{_diagnostics_text(err)}"
            )
            return None
        return marshal(value)

    async def _wait_with_stats(self) -> driver_pb2.WaitTaskResponse:
        wait = asyncio.ensure_future(
            self.driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=self.task_id))
        )
        stats = asyncio.create_task(self._follow_stats())
        stop = asyncio.create_task(self.stop_requested.wait())
        try:
            await asyncio.wait([wait, stop], return_when=asyncio.FIRST_COMPLETED)
            if not wait.done():
                await self._stop()
            response: driver_pb2.WaitTaskResponse = await wait
            return response
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

    async def _stop(self) -> None:
        timeout = min(self.task.kill_timeout_s, MAX_KILL_TIMEOUT)
        duration = Duration()
        duration.FromNanoseconds(int(timeout * 1e9))
        self.progress.info(
            f'stopping task "{self.task.name}" '
            f"(signal {self.task.kill_signal or 'default'}, timeout {timeout:g}s)"
        )
        request = driver_pb2.StopTaskRequest(
            task_id=self.task_id, timeout=duration, signal=self.task.kill_signal
        )
        try:
            await self.driver.StopTask(request)
        except grpc.aio.AioRpcError as err:
            self.progress.error(
                f'failed to stop task "{self.task.name}": {describe_rpc_error(err)}'
            )

    async def _destroy(self) -> None:
        request = driver_pb2.DestroyTaskRequest(task_id=self.task_id, force=True)
        try:
            await self.driver.DestroyTask(request)
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
