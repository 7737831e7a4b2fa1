"""One task's request, state and exit result, as the task manager keeps them."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .settings import TaskConfig

# Version of the driver_state bytes stored in Nomad's task handle. Raise it
# when their layout changes, so that recovery can tell old state apart.
TASK_HANDLE_VERSION = 1


@dataclass(frozen=True)
class TaskRequest:
    """The task that StartTask requests, without protobuf types."""

    id: str
    name: str
    alloc_id: str
    job_name: str
    task_group_name: str
    alloc_dir: Path
    stdout_path: str
    stderr_path: str
    env: Mapping[str, str]
    driver_config: bytes
    memory_limit_bytes: int = 0  # 0: no limit beyond wasmtime's own

    @property
    def task_dir(self) -> Path:
        return self.alloc_dir / self.name


@dataclass(frozen=True)
class ExitResult:
    exit_code: int = 0
    signal: int = 0
    oom_killed: bool = False
    err: str = ""

    @property
    def successful(self) -> bool:
        return self.exit_code == 0 and self.signal == 0 and not self.err


@dataclass(frozen=True)
class TaskUsage:
    """CPU time (seconds) and memory (bytes) a task uses, sampled at `timestamp`."""

    timestamp: float
    user_seconds: float = 0.0
    system_seconds: float = 0.0
    cpu_percent: float = 0.0  # 100 is one core for the whole interval
    rss_bytes: int = 0  # 0: not measured, as for a task on a plugin thread


class TaskStatus(enum.Enum):
    RUNNING = "running"
    EXITED = "exited"


@dataclass
class TaskHandle:
    """A task known to this plugin process.

    The handle owns its status fields; only the task manager changes them,
    from the event loop thread. `done` is set once `result` is final.
    """

    request: TaskRequest
    config: TaskConfig
    started_at: float = field(default_factory=time.time)
    completed_at: float | None = None
    status: TaskStatus = TaskStatus.RUNNING
    result: ExitResult | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # The executor's part of Nomad's driver_state, such as a task's pid.
    executor_state: dict[str, object] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.request.id

    def finish(self, result: ExitResult) -> None:
        if self.done.is_set():
            return
        self.result = result
        self.status = TaskStatus.EXITED
        self.completed_at = time.time()
        self.done.set()
