"""Run one task request to its exit result, the same way in every isolation mode.

The thread executor calls this on a worker thread of the plugin and the
process executor's shim calls it in the task's own process, so a task ends
with the same exit codes and messages in both modes.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import wasmtime

from .cache import ModuleCache
from .engine import Interrupt
from .errors import TaskError
from .handle import ExitResult, TaskRequest
from .runtime import TaskInterrupted, TaskIO, resolve_module_path, run_task
from .settings import TaskConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskRuntime:
    """The engine, module cache and working directory that tasks share."""

    engine: wasmtime.Engine
    cache: ModuleCache
    cwd: Path  # relative module paths fall back to this directory


def run_request(
    runtime: TaskRuntime,
    request: TaskRequest,
    config: TaskConfig,
    interrupt: Interrupt,
    logs: tuple[BinaryIO, BinaryIO],
    stop_signal: Callable[[], int],
) -> ExitResult:
    """Run a task and return how it ended, also when the task fails.

    `logs` are the task's stdout and stderr. `stop_signal` returns the signal
    a stop requested, which decides how an interrupted task is reported.
    """
    stdout, stderr = logs
    try:
        if interrupt.requested:
            raise TaskInterrupted()
        path = resolve_module_path(config.module_path, request.task_dir, runtime.cwd)
        module = runtime.cache.load(path)
        io = TaskIO(
            stdout=stdout,
            stderr=stderr,
            env=request.env,
            task_dir=request.task_dir,
            alloc_dir=request.alloc_dir,
            module_name=path.name,
            module_path=path,
            memory_limit_bytes=request.memory_limit_bytes,
        )
        exit_code = run_task(runtime.engine, module, config, io, interrupt)
        return ExitResult(exit_code=exit_code)
    except TaskInterrupted:
        number = stop_signal() or signal.SIGKILL
        return ExitResult(exit_code=128 + number, signal=number)
    except TaskError as err:
        report_error(stderr, str(err))
        return ExitResult(exit_code=err.exit_code, err=str(err))
    except Exception as err:  # a bug: keep the plugin serving other tasks
        log.exception("task failed unexpectedly", extra={"task_id": request.id})
        message = f"internal driver error: {err}"
        report_error(stderr, message)
        return ExitResult(exit_code=1, err=message)


def report_error(stderr: BinaryIO, message: str) -> None:
    """Write a task's error to its stderr, where `nomad alloc logs -stderr` shows it."""
    try:
        stderr.write(message.encode() + b"\n")
    except OSError:
        pass
