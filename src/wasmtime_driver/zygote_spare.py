"""The spare task process that the zygote keeps forked ahead of the next task.

A spare starts its session, its stop-signal thread and its engine before any
task arrives, so the fork and that set-up are off a task's start path. The
zygote hands it one task: the start file path with the task's stdout and
stderr fds attached (SCM_RIGHTS). A spare exits when the zygote's end of its
socket closes without a task.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .engine import create_engine
from .shim import STOP_SIGNALS, StopWatcher, run_start
from .shim_files import read_start

REQUEST_MAX_BYTES = 4096
# The spare's end of its socket, after it has closed every other fd above 2.
SPARE_FD = 3
# Blocked around a fork: the stop signals so that the child holds them until
# its sigwait thread runs, and SIGCHLD so that the zygote's reaper cannot
# reap the child before the zygote opens its pidfd.
FORK_MASK = STOP_SIGNALS | {signal.SIGCHLD}


class ForkError(Exception):
    """The zygote cannot fork a task process; the message goes to the plugin."""


@dataclass(frozen=True)
class Spare:
    """The zygote's handle on one spare: its pid, a pidfd of it and its socket."""

    pid: int
    pidfd: int
    sock: socket.socket

    def hand_over(self, message: bytes, logs: list[int]) -> None:
        """Send the spare its task; raises OSError when the spare is gone."""
        socket.send_fds(self.sock, [message], logs)

    def close(self) -> None:
        os.close(self.pidfd)
        self.sock.close()


def fork_spare(inherited: socket.socket) -> Spare:
    """Fork a spare; raises ForkError or OSError.

    `inherited` is the zygote's socket to the plugin, which the spare closes.
    """
    _check_single_threaded()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_MASK)
    try:
        pid = os.fork()
        if pid == 0:
            _run_spare(theirs, (inherited, ours))
        return Spare(pid, os.pidfd_open(pid), ours)
    except BaseException:
        ours.close()
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        theirs.close()


def _check_single_threaded() -> None:
    threads = len(os.listdir("/proc/self/task"))
    if threading.active_count() != 1 or threads != 1:
        raise ForkError(
            f"the zygote runs {threads} threads and cannot fork safely; "
            "the plugin starts tasks in a fresh interpreter instead"
        )


def _run_spare(sock: socket.socket, inherited: tuple[socket.socket, ...]) -> NoReturn:
    # An exception must not unwind into the zygote's loop, so this only exits.
    code = 1
    try:
        channel = _become_spare(sock, inherited)
        watcher = StopWatcher()
        watcher.start()
        engine = create_engine()
        start_path = _receive_task(channel)
        if start_path is None:
            code = 0
        else:
            start = read_start(start_path)
            start_path.unlink(missing_ok=True)
            code = run_start(start, watcher, engine)
    except BaseException:  # noqa: BLE001 - reported in the task's log
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
    finally:
        os._exit(code)


def _become_spare(
    sock: socket.socket, inherited: tuple[socket.socket, ...]
) -> socket.socket:
    # A new session, like the fresh-interpreter shim: the task survives the
    # plugin, and a stop signals its process group alone.
    os.setsid()
    # Detached first, so that collecting the socket objects later cannot
    # close an fd number that the task has reused by then.
    for other in inherited:
        other.detach()
    fd = sock.detach()
    if fd != SPARE_FD:
        os.dup2(fd, SPARE_FD)
    os.closerange(SPARE_FD + 1, os.sysconf("SC_OPEN_MAX"))
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, STOP_SIGNALS)
    return socket.socket(fileno=SPARE_FD)


def _receive_task(channel: socket.socket) -> Path | None:
    """Wait for the task; None when the zygote closed the socket without one."""
    message, fds, _flags, _address = socket.recv_fds(channel, REQUEST_MAX_BYTES, 2)
    channel.close()
    if not message:
        return None
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    return Path(os.fsdecode(message))
