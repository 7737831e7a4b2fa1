"""Opening a task's stdout and stderr log FIFOs without blocking the event loop.

Nomad's log collector (logmon) creates both FIFOs and opens them for reading
before StartTask. Opening a FIFO for writing blocks until a reader is there,
so the open is retried with O_NONBLOCK, which fails with ENXIO instead of
blocking while no reader has it open, and the descriptor is switched back to blocking
writes once open.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from typing import BinaryIO

from .errors import DriverError

# How long StartTask waits for logmon to open a FIFO for reading.
FIFO_OPEN_TIMEOUT = 10.0
_RETRY_INTERVAL = 0.005


class LogOpenError(DriverError):
    """A task's log FIFO could not be opened; Nomad may retry the start."""


async def open_log(path: str, timeout: float = FIFO_OPEN_TIMEOUT) -> BinaryIO:
    """Open a log FIFO (or plain file) write-only, waiting for its reader."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            # O_APPEND matters only for a regular file, which Nomad never passes
            # but a hand-written TaskConfig may: it keeps earlier content.
            flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(path, flags)
        except OSError as err:
            if err.errno != errno.ENXIO:
                raise LogOpenError(
                    f"failed to open log {path!r}: {err.strerror}"
                ) from err
            if loop.time() >= deadline:
                raise LogOpenError(
                    f"failed to open log {path!r}: no reader after {timeout:g}s; "
                    "is Nomad's log collector running?"
                ) from err
            await asyncio.sleep(_RETRY_INTERVAL)
            continue
        _set_blocking(fd)
        return os.fdopen(fd, "wb", buffering=0)


async def open_logs(stdout_path: str, stderr_path: str) -> tuple[BinaryIO, BinaryIO]:
    """Open both logs; if the second fails, the first is closed again."""
    stdout = await open_log(stdout_path)
    try:
        stderr = await open_log(stderr_path)
    except BaseException:
        stdout.close()
        raise
    return stdout, stderr


def _set_blocking(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
