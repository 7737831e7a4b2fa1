"""The warm helper process that forks the task processes of `process` isolation.

The plugin starts it once as `python -m wasmtime_driver.zygote SOCKET_FD`,
with /dev/null as stdin, stdout and stderr. It imports wasmtime and the shim
up front, so a forked task skips the interpreter start-up and the imports.
It starts no thread and creates no engine, because a fork copies only the
calling thread and would leave another thread's locks held forever.

Protocol, on a SOCK_SEQPACKET socket: each request is a start file path with
the task's stdout and stderr fds attached (SCM_RIGHTS). Each reply is a
native int32: the forked task's pid with a pidfd of it attached, or 0
followed by a UTF-8 error message. The zygote exits when the plugin closes
its end.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import struct
import sys
import threading
import traceback
from pathlib import Path
from typing import NoReturn

from .engine import engine_fingerprint
from .shim import STOP_SIGNALS, StopWatcher, run_start, silence_logging
from .shim_files import read_start

REPLY = struct.Struct("=i")
REQUEST_MAX_BYTES = 4096
# Blocked around a fork: the stop signals so that the child holds them until
# its sigwait thread runs, and SIGCHLD so that the reaper cannot reap the
# child before the zygote opens its pidfd.
FORK_MASK = STOP_SIGNALS | {signal.SIGCHLD}


class ForkError(Exception):
    """The zygote cannot fork a task; the message goes back to the plugin."""


def main(argv: list[str]) -> int:
    silence_logging()
    for number in STOP_SIGNALS:
        # The plugin ignores SIGINT and the zygote inherits that; a child
        # must start with default dispositions before it blocks them.
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, _reap_children)
    _warm_up()
    serve(socket.socket(fileno=int(argv[1])))
    return 0


def _warm_up() -> None:
    # Work that every task repeats and that starts no thread, done once here
    # so that each child inherits the result.
    engine_fingerprint()
    # Moves every object to a generation that the collector never scans, so
    # a child's collections do not write to, and so copy, the shared pages.
    gc.freeze()


def serve(sock: socket.socket) -> None:
    """Fork one task per request until the plugin closes its end of `sock`."""
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, REQUEST_MAX_BYTES, 2)
        except ConnectionResetError:
            return
        if not message:
            return
        try:
            _reply(sock, Path(os.fsdecode(message)), fds)
        finally:
            for fd in fds:
                os.close(fd)


def _reply(sock: socket.socket, start_path: Path, fds: list[int]) -> None:
    try:
        if len(fds) != 2:
            raise ForkError(f"expected 2 log fds with the request, got {len(fds)}")
        pid, pidfd = _fork_task(sock, start_path, (fds[0], fds[1]))
    except (ForkError, OSError) as err:
        sock.sendall(REPLY.pack(0) + str(err).encode())
        return
    try:
        socket.send_fds(sock, [REPLY.pack(pid)], [pidfd])
    finally:
        os.close(pidfd)


def _fork_task(
    sock: socket.socket, start_path: Path, logs: tuple[int, int]
) -> tuple[int, int]:
    _check_single_threaded()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_MASK)
    try:
        pid = os.fork()
        if pid == 0:
            _run_child(sock, start_path, logs)
        return pid, os.pidfd_open(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _check_single_threaded() -> None:
    threads = len(os.listdir("/proc/self/task"))
    if threading.active_count() != 1 or threads != 1:
        raise ForkError(
            f"the zygote runs {threads} threads and cannot fork safely; "
            "the plugin starts tasks in a fresh interpreter instead"
        )


def _run_child(
    sock: socket.socket, start_path: Path, logs: tuple[int, int]
) -> NoReturn:
    # An exception must not unwind into the zygote's loop, so this only exits.
    code = 1
    try:
        _become_task_process(sock, logs)
        watcher = StopWatcher()
        watcher.start()
        start = read_start(start_path)
        start_path.unlink(missing_ok=True)
        code = run_start(start, watcher)
    except BaseException:  # noqa: BLE001 - reported in the task's log
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
    finally:
        os._exit(code)


def _become_task_process(sock: socket.socket, logs: tuple[int, int]) -> None:
    # A new session, like the fresh-interpreter shim: the task survives the
    # plugin, and a stop signals its process group alone.
    os.setsid()
    os.dup2(logs[0], 1)
    os.dup2(logs[1], 2)
    # Detached first, so that collecting the socket object later cannot
    # close an fd number that the task has reused by then.
    sock.detach()
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, STOP_SIGNALS)


def _reap_children(_number: int, _frame: object) -> None:
    # Exit results come from the result files, so the statuses are dropped.
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    sys.exit(main(sys.argv))
