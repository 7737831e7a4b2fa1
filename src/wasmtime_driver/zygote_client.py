"""The plugin's side of the zygote: start it, send it start requests, replace it.

See `wasmtime_driver.zygote` for the process itself and its socket protocol.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import DriverError
from .zygote import REPLY

log = logging.getLogger(__name__)

ZYGOTE_MODULE = "wasmtime_driver.zygote"
# Long enough for the zygote's imports on a busy machine, which the first
# request waits for, and far longer than a fork.
REPLY_TIMEOUT_SECONDS = 60.0
REPLY_MAX_BYTES = 4096
CLOSE_TIMEOUT_SECONDS = 1.0


class ZygoteError(Exception):
    """The zygote replied that it cannot fork, so it forked nothing."""


@dataclass(frozen=True)
class ForkedTask:
    """A task process that the zygote forked, and a pidfd of it for the caller."""

    pid: int
    pidfd: int


class ZygoteProcess:
    """One running zygote and the plugin's end of its socket."""

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.process = process
        self.forked_any = False
        self._socket = sock

    @classmethod
    def spawn(cls) -> ZygoteProcess:
        """Start a zygote; raises OSError."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", ZYGOTE_MODULE, str(theirs.fileno())],
                # Without the plugin's stdout and stderr, so that the zygote
                # cannot keep go-plugin from seeing the plugin exit.
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(REPLY_TIMEOUT_SECONDS)
        return cls(process, ours)

    def exited(self) -> bool:
        return self.process.poll() is not None

    def send_request(self, start_path: Path, logs: tuple[int, int]) -> None:
        """Send one start request; raises OSError when the zygote is gone."""
        socket.send_fds(self._socket, [os.fsencode(start_path)], list(logs))

    def receive_reply(self) -> ForkedTask:
        """Wait for the reply to a request; raises ZygoteError or OSError."""
        message, fds, _flags, _address = socket.recv_fds(
            self._socket, REPLY_MAX_BYTES, 1
        )
        if len(message) < REPLY.size:
            _close_all(fds)
            raise ConnectionError("the zygote closed its socket without a reply")
        (pid,) = REPLY.unpack_from(message)
        if pid == 0:
            _close_all(fds)
            raise ZygoteError(message[REPLY.size :].decode(errors="replace"))
        if len(fds) != 1:
            _close_all(fds)
            raise ConnectionError(f"the zygote replied pid {pid} without a pidfd")
        self.forked_any = True
        return ForkedTask(pid, fds[0])

    def close(self) -> None:
        """Close the socket, on which the zygote exits, and reap it."""
        self._socket.close()
        try:
            self.process.wait(timeout=CLOSE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self._socket.close()
        self.process.kill()
        self.process.wait()


class ZygoteLauncher:
    """Forks tasks through a zygote that it starts and replaces as needed.

    `fork` returns None when no zygote can be used, and the caller then
    starts the task in a fresh interpreter.
    """

    def __init__(self) -> None:
        self._zygote: ZygoteProcess | None = None
        self._disabled = False
        # Requests run on worker threads, and one socket serves one at a time.
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the zygote now, so that it imports before the first task."""
        with self._lock:
            self._ensure()

    async def fork(self, start_path: Path, logs: tuple[int, int]) -> ForkedTask | None:
        """Fork a task process for `start_path`; raises DriverError."""
        return await asyncio.to_thread(self._fork, start_path, logs)

    def close(self) -> None:
        with self._lock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None

    def _fork(self, start_path: Path, logs: tuple[int, int]) -> ForkedTask | None:
        with self._lock:
            # A second attempt covers a zygote that exited since the last task.
            for _attempt in range(2):
                zygote = self._ensure()
                if zygote is None:
                    return None
                if self._send(zygote, start_path, logs):
                    return self._receive(zygote)
            return None

    def _send(
        self, zygote: ZygoteProcess, start_path: Path, logs: tuple[int, int]
    ) -> bool:
        try:
            if not zygote.exited():
                zygote.send_request(start_path, logs)
                return True
            error = f"exited with status {zygote.process.returncode}"
        except OSError as err:
            error = str(err)
        # It never read this request, so it forked nothing for it.
        if not zygote.forked_any:
            # It failed before its first fork, most likely in its imports.
            self._give_up(error)
            return False
        log.warning(
            "zygote process is gone; starting a new one",
            extra={"pid": zygote.process.pid, "error": error},
        )
        self._discard()
        return False

    def _receive(self, zygote: ZygoteProcess) -> ForkedTask | None:
        try:
            return zygote.receive_reply()
        except ZygoteError as err:
            self._give_up(str(err))
            return None
        except OSError as err:
            self._discard()
            if not zygote.forked_any:
                # It failed before its first fork, most likely in its imports.
                self._give_up(str(err) or type(err).__name__)
                return None
            raise DriverError(
                f"zygote process {zygote.process.pid} failed while starting the "
                f"task: {err}; Nomad will start the task again"
            ) from err

    def _ensure(self) -> ZygoteProcess | None:
        if self._zygote is None and not self._disabled:
            try:
                self._zygote = ZygoteProcess.spawn()
            except OSError as err:
                self._give_up(str(err))
                return None
            log.info("started zygote process", extra={"pid": self._zygote.process.pid})
        return self._zygote

    def _discard(self) -> None:
        if self._zygote is not None:
            self._zygote.kill()
            self._zygote = None

    def _give_up(self, error: str) -> None:
        log.warning(
            "zygote process unusable; starting each task in a fresh interpreter",
            extra={"error": error},
        )
        self._disabled = True
        self._discard()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
