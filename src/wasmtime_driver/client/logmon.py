"""Reading a task's log FIFOs the way Nomad's log collector (logmon) does.

logmon opens each FIFO for reading before StartTask, copies everything the
driver writes into rotated files `<task>.stdout.0`, `.1`, ... in
`alloc/logs`, and stops at the first EOF: once the driver closes its write
end, the FIFO is not read again. Here each FIFO is read by one thread, which
also hands the data to extra sinks (our stdout or stderr) as it arrives.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

# Nomad's defaults for a task's `logs` block: 10 files of 10 MB each.
DEFAULT_MAX_FILES = 10
DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024  # bytes

READ_SIZE = 64 * 1024
# A cancelled reader still copies what is already in the pipe, up to this
# much: Linux's default pipe-max-size (/proc/sys/fs/pipe-max-size), so a
# writer that keeps writing cannot hold the reader.
MAX_DRAIN_BYTES = 1024 * 1024
# A reader thread blocks only inside a sink, such as our stdout when the
# process reading it stops reading. The thread is a daemon, so leaving it is
# safe.
CANCEL_JOIN_TIMEOUT = 5.0  # seconds

Sink = Callable[[bytes], None]


class FileRotator:
    """Appends to `<base>.N` files, starting a new file when one is full.

    Like Nomad's rotator it continues after the highest existing index and
    deletes the oldest files beyond `max_files`.
    """

    def __init__(
        self,
        directory: Path,
        base_name: str,
        max_files: int = DEFAULT_MAX_FILES,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    ) -> None:
        if max_files < 1 or max_file_size < 1:
            raise ValueError(
                f"invalid log rotation max_files={max_files} "
                f"max_file_size={max_file_size}: both must be at least 1"
            )
        self.directory = directory
        self.base_name = base_name
        self.max_files = max_files
        self.max_file_size = max_file_size
        self.index = max(self._existing_indexes(), default=0)
        self._file = open(self.path(self.index), "ab")  # noqa: SIM115

    def path(self, index: int) -> Path:
        return self.directory / f"{self.base_name}.{index}"

    def write(self, data: bytes) -> None:
        while data:
            room = self.max_file_size - self._file.tell()
            if room <= 0:
                self._rotate()
                continue
            self._file.write(data[:room])
            self._file.flush()
            data = data[room:]

    def close(self) -> None:
        self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        self.index += 1
        self._file = open(self.path(self.index), "ab")  # noqa: SIM115
        for index in self._existing_indexes():
            if index <= self.index - self.max_files:
                self.path(index).unlink(missing_ok=True)

    def _existing_indexes(self) -> list[int]:
        pattern = re.compile(re.escape(self.base_name) + r"\.(\d+)")
        indexes = []
        for entry in self.directory.iterdir():
            match = pattern.fullmatch(entry.name)
            if match:
                indexes.append(int(match.group(1)))
        return indexes


class FifoReader:
    """Reads one FIFO in a thread until its writer closes it.

    The FIFO is opened O_NONBLOCK, so opening never waits for a writer, and
    the thread waits in poll() on the FIFO and on a wake-up pipe that
    `cancel` writes to.
    NOTE: this relies on Linux pipe semantics: poll() reports no hang-up on
    a FIFO until a writer has opened and closed it after our open.
    """

    def __init__(self, path: Path, sinks: Sequence[Sink]) -> None:
        self.path = path
        self._sinks = list(sinks)
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(
            target=self._run, name=f"logmon {path.name}", daemon=True
        )
        self._close_lock = threading.Lock()
        self._closed = False
        self.bytes_read = 0
        self.reached_eof = False

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the reader to stop; return whether it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def cancel(self) -> None:
        """Make the thread stop soon without waiting for EOF.

        The thread first copies up to MAX_DRAIN_BYTES already in the FIFO,
        so output written before the cancel is kept.
        """
        # The lock keeps the write off a descriptor that the ending thread
        # has closed and the process may already have reused.
        with self._close_lock:
            if self._closed:
                return
            try:
                os.write(self._wake_write, b"x")
            except OSError as err:
                if err.errno != errno.EAGAIN:
                    raise

    def _run(self) -> None:
        try:
            self._copy_until_eof()
        finally:
            with self._close_lock:
                self._closed = True
                for fd in (self._fd, self._wake_read, self._wake_write):
                    os.close(fd)

    def _copy_until_eof(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            # The wake-up pipe comes first, so a writer that never pauses
            # cannot keep a cancelled reader going.
            if self._wake_read in ready:
                self._drain_buffered()
                return
            if self._fd in ready:
                try:
                    data = os.read(self._fd, READ_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    self.reached_eof = True
                    return
                self.bytes_read += len(data)
                self._deliver(data)

    def _drain_buffered(self) -> None:
        drained = 0
        while drained < MAX_DRAIN_BYTES:
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return
            # Empty data is EOF or a FIFO that no writer ever opened; the two
            # look alike on a non-blocking read, so `reached_eof` stays False.
            if not data:
                return
            drained += len(data)
            self.bytes_read += len(data)
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        for sink in self._sinks:
            try:
                sink(data)
            except (OSError, ValueError) as err:
                logger.warning(
                    "failed to copy task log data",
                    extra={"fifo": str(self.path), "error": str(err)},
                )


class TaskLogs:
    """The stdout and stderr collectors of one task, as logmon runs them."""

    def __init__(
        self,
        task_name: str,
        logs_dir: Path,
        stdout_fifo: Path,
        stderr_fifo: Path,
        stdout_sinks: Sequence[Sink] = (),
        stderr_sinks: Sequence[Sink] = (),
    ) -> None:
        self.stdout_file = FileRotator(logs_dir, f"{task_name}.stdout")
        self.stderr_file = FileRotator(logs_dir, f"{task_name}.stderr")
        self.stdout = FifoReader(stdout_fifo, [self.stdout_file.write, *stdout_sinks])
        self.stderr = FifoReader(stderr_fifo, [self.stderr_file.write, *stderr_sinks])

    def start(self) -> None:
        self.stdout.start()
        self.stderr.start()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` s for EOF on both FIFOs, then cancel the readers.

        Returns whether both reached EOF. A cancelled reader gets up to
        CANCEL_JOIN_TIMEOUT s more to copy what is buffered.
        """
        deadline = time.monotonic() + timeout
        for reader in (self.stdout, self.stderr):
            reader.join(max(deadline - time.monotonic(), 0.0))
        for reader in (self.stdout, self.stderr):
            if not reader.join(0):
                reader.cancel()
        for reader in (self.stdout, self.stderr):
            if not reader.join(CANCEL_JOIN_TIMEOUT):
                logger.warning(
                    "task log reader still blocked in a sink; leaving it",
                    extra={"fifo": str(reader.path)},
                )
        self.stdout_file.close()
        self.stderr_file.close()
        return self.stdout.reached_eof and self.stderr.reached_eof
