"""The warm helper process that forks the task processes of `process` isolation.

The plugin starts it once as `python -m wasmtime_driver.zygote SOCKET_FD`,
with /dev/null as stdin, stdout and stderr. It imports wasmtime and the shim
up front, so a forked task skips the interpreter start-up and the imports.
It starts no thread and creates no engine, because a fork copies only the
calling thread and would leave another thread's locks held forever. It keeps
one spare task process forked ahead (`zygote_spare`) and hands each task to
the spare, then forks the next spare.

Protocol, on a SOCK_SEQPACKET socket: each request is a start file path with
the task's stdout and stderr fds attached (SCM_RIGHTS). Each reply is a
native int32: the task process's pid with a pidfd of it attached, or 0
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

from .engine import engine_fingerprint
from .shim import STOP_SIGNALS, silence_logging
from .zygote_spare import REQUEST_MAX_BYTES, ForkError, Spare, fork_spare

REPLY = struct.Struct("=i")


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
    """Hand one task per request to a spare until the plugin closes `sock`."""
    spare: Spare | None = None
    while True:
        if spare is None:
            # Forked while the task handed over last runs, so that the next
            # request finds it ready in most cases.
            spare = _fork_spare_if_possible(sock)
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, REQUEST_MAX_BYTES, 2)
        except ConnectionResetError:
            return
        if not message:
            return
        try:
            spare = _reply(sock, spare, message, fds)
        finally:
            for fd in fds:
                os.close(fd)


def _fork_spare_if_possible(sock: socket.socket) -> Spare | None:
    # A failure here is reported when a request needs the spare.
    try:
        return fork_spare(sock)
    except (ForkError, OSError):
        return None


def _reply(
    sock: socket.socket, spare: Spare | None, message: bytes, fds: list[int]
) -> Spare | None:
    """Hand the task to a spare and reply; return the spare if it is unused."""
    if len(fds) != 2:
        _send_error(sock, f"expected 2 log fds with the request, got {len(fds)}")
        return spare
    try:
        used = _hand_over(sock, spare, message, fds)
    except (ForkError, OSError) as err:
        _send_error(sock, str(err))
        return None
    try:
        socket.send_fds(sock, [REPLY.pack(used.pid)], [used.pidfd])
    finally:
        used.close()
    return None


def _send_error(sock: socket.socket, message: str) -> None:
    sock.sendall(REPLY.pack(0) + message.encode())


def _hand_over(
    sock: socket.socket, spare: Spare | None, message: bytes, fds: list[int]
) -> Spare:
    # A second attempt covers a spare that exited, or was killed, while idle.
    for _attempt in range(2):
        if spare is None:
            spare = fork_spare(sock)
        try:
            spare.hand_over(message, fds)
            return spare
        except OSError:
            spare.close()
            spare = None
    raise ForkError("spare task processes exit before they receive a task")


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
