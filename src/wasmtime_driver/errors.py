"""Exceptions raised by the driver.

    DriverError                 base of every error the driver raises on purpose
    ├── ConfigError             invalid plugin or task configuration
    ├── TaskError               a task failed; the message goes to the task's stderr
    │   └── ModuleError         a module cannot be found, read, compiled or linked
    └── TaskNotFoundError       no task with the given id is known

Expected errors carry a message written for the Nomad operator. Anything else
that escapes is a bug and is logged with its traceback.
"""

from __future__ import annotations


class DriverError(Exception):
    """Base of the errors the driver raises on purpose."""


class ConfigError(DriverError):
    """Invalid plugin or task configuration."""


class TaskError(DriverError):
    """A task failed; the message is shown to the operator as the task's error."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ModuleError(TaskError):
    """A module cannot be found, read, compiled or linked."""


class TaskNotFoundError(DriverError):
    """No task with the given id is known to this plugin process."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found")
        self.task_id = task_id
