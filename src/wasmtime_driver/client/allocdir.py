"""An allocation directory with the layout a Nomad client builds.

    <alloc_dir>/
        alloc/              shared by the group's tasks (NOMAD_ALLOC_DIR)
            data/  logs/  tmp/
        <task>/             one per task
            local/          NOMAD_TASK_DIR
            secrets/        NOMAD_SECRETS_DIR
            private/
            tmp/

A driver that reports fs_isolation NONE gets these host paths in the task's
environment. The log collector's FIFOs live in `alloc/logs` as
`.<task>.stdout.fifo` and `.<task>.stderr.fifo`.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SHARED_DIR_NAME = "alloc"
SHARED_SUBDIRS = ("data", "logs", "tmp")
TASK_SUBDIRS = ("local", "secrets", "private", "tmp")

# Everyone may write to the shared and task directories, as in Nomad, because
# tasks may run as another user. The secrets directory is for the task alone.
DIR_MODE = 0o777
SECRETS_MODE = 0o700
# logmon creates its FIFOs readable and writable by the agent's user only.
FIFO_MODE = 0o600


@dataclass(frozen=True)
class TaskDir:
    """The host paths of one task's directories."""

    name: str
    path: Path

    @property
    def local_dir(self) -> Path:
        return self.path / "local"

    @property
    def secrets_dir(self) -> Path:
        return self.path / "secrets"

    @property
    def private_dir(self) -> Path:
        return self.path / "private"

    @property
    def tmp_dir(self) -> Path:
        return self.path / "tmp"


@dataclass(frozen=True)
class AllocDir:
    """The host paths of one allocation's directory tree."""

    path: Path

    @property
    def shared_dir(self) -> Path:
        return self.path / SHARED_DIR_NAME

    @property
    def logs_dir(self) -> Path:
        return self.shared_dir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.shared_dir / "data"

    @property
    def tmp_dir(self) -> Path:
        return self.shared_dir / "tmp"

    def task_dir(self, task_name: str) -> TaskDir:
        return TaskDir(task_name, self.path / task_name)

    def stdout_fifo(self, task_name: str) -> Path:
        return self.logs_dir / f".{task_name}.stdout.fifo"

    def stderr_fifo(self, task_name: str) -> Path:
        return self.logs_dir / f".{task_name}.stderr.fifo"

    def build(self, task_names: Iterable[str]) -> None:
        """Create the shared directories and one directory tree per task."""
        _make_dir(self.path, DIR_MODE)
        _make_dir(self.shared_dir, DIR_MODE)
        for name in SHARED_SUBDIRS:
            _make_dir(self.shared_dir / name, DIR_MODE)
        for task_name in task_names:
            _check_task_name(task_name)
            task_dir = self.task_dir(task_name)
            _make_dir(task_dir.path, DIR_MODE)
            for name in TASK_SUBDIRS:
                mode = SECRETS_MODE if name == "secrets" else DIR_MODE
                _make_dir(task_dir.path / name, mode)

    def create_fifos(self, task_name: str) -> tuple[Path, Path]:
        """Create the task's stdout and stderr FIFOs, replacing stale ones."""
        paths = (self.stdout_fifo(task_name), self.stderr_fifo(task_name))
        for path in paths:
            make_fifo(path)
        return paths

    def destroy(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def make_fifo(path: Path) -> None:
    """Create a FIFO at `path` with mode 0600, keeping an existing FIFO."""
    try:
        if stat.S_ISFIFO(path.lstat().st_mode):
            return
        path.unlink()
    except FileNotFoundError:
        pass
    os.mkfifo(path, FIFO_MODE)


def _make_dir(path: Path, mode: int) -> None:
    path.mkdir(exist_ok=True)
    # mkdir applies the umask; Nomad sets the modes explicitly.
    path.chmod(mode)


def _check_task_name(name: str) -> None:
    if not name or name in (".", "..", SHARED_DIR_NAME) or "/" in name:
        raise ValueError(
            f"invalid task name {name!r}: a task name must be a single path "
            f"component other than {SHARED_DIR_NAME!r}"
        )
