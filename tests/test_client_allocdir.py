"""Tests for the allocation directory layout and the log FIFO readers."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from wasmtime_driver.client.allocdir import AllocDir
from wasmtime_driver.client.logmon import FifoReader, FileRotator, TaskLogs

JOIN_TIMEOUT = 10.0  # seconds; only reached when a reader is broken


def test_allocdir_layout(tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path / "alloc-id")
    alloc.build(["web", "sidecar"])
    for name in ("data", "logs", "tmp"):
        assert (tmp_path / "alloc-id" / "alloc" / name).is_dir()
    for task in ("web", "sidecar"):
        for name in ("local", "secrets", "private", "tmp"):
            assert (tmp_path / "alloc-id" / task / name).is_dir()
    assert alloc.task_dir("web").local_dir == tmp_path / "alloc-id" / "web" / "local"
    secrets_mode = stat.S_IMODE(
        (tmp_path / "alloc-id" / "web" / "secrets").stat().st_mode
    )
    assert secrets_mode == 0o700


def test_allocdir_fifo_paths_and_mode(tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path)
    alloc.build(["sum"])
    stdout_fifo, stderr_fifo = alloc.create_fifos("sum")
    assert stdout_fifo == tmp_path / "alloc" / "logs" / ".sum.stdout.fifo"
    assert stderr_fifo == tmp_path / "alloc" / "logs" / ".sum.stderr.fifo"
    for path in (stdout_fifo, stderr_fifo):
        mode = path.lstat().st_mode
        assert stat.S_ISFIFO(mode)
        assert stat.S_IMODE(mode) == 0o600


def test_allocdir_fifo_replaces_plain_file(tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path)
    alloc.build(["sum"])
    alloc.stdout_fifo("sum").write_text("stale")
    stdout_fifo, _ = alloc.create_fifos("sum")
    assert stat.S_ISFIFO(stdout_fifo.lstat().st_mode)


@pytest.mark.parametrize("name", ["", "alloc", "a/b", ".."])
def test_allocdir_invalid_task_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid task name"):
        AllocDir(tmp_path).build([name])


def _write_fifo(path: Path, chunks: list[bytes]) -> None:
    # A driver opens the FIFO write-only once the reader is there.
    fd = os.open(path, os.O_WRONLY)
    try:
        for chunk in chunks:
            os.write(fd, chunk)
    finally:
        os.close(fd)


def test_fifo_reader_copies_until_eof(tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path)
    alloc.build(["sum"])
    stdout_fifo, _ = alloc.create_fifos("sum")
    received: list[bytes] = []
    reader = FifoReader(stdout_fifo, [received.append])
    reader.start()
    writer = threading.Thread(
        target=_write_fifo, args=(stdout_fifo, [b"8023", b"66\n"])
    )
    writer.start()
    writer.join(JOIN_TIMEOUT)
    assert reader.join(JOIN_TIMEOUT)
    assert reader.reached_eof
    assert b"".join(received) == b"802366\n"
    assert reader.bytes_read == 7


def test_fifo_reader_cancel_without_writer(tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path)
    alloc.build(["sum"])
    stdout_fifo, _ = alloc.create_fifos("sum")
    reader = FifoReader(stdout_fifo, [])
    reader.start()
    assert not reader.join(0.2)  # no writer yet: still waiting, not at EOF
    reader.cancel()
    assert reader.join(JOIN_TIMEOUT)
    assert not reader.reached_eof


def test_fifo_reader_cancel_keeps_buffered_output(tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path)
    alloc.build(["sum"])
    stdout_fifo, _ = alloc.create_fifos("sum")
    received: list[bytes] = []
    reader = FifoReader(stdout_fifo, [received.append])
    # The writer stays open, so no EOF ends the reader: only the cancel does.
    writer = os.open(stdout_fifo, os.O_WRONLY)
    try:
        os.write(writer, b"written before the cancel\n")
        reader.cancel()
        reader.start()
        assert reader.join(JOIN_TIMEOUT)
    finally:
        os.close(writer)
    assert b"".join(received) == b"written before the cancel\n"
    assert not reader.reached_eof


def test_fifo_reader_cancel_stops_busy_writer(tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path)
    alloc.build(["sum"])
    stdout_fifo, _ = alloc.create_fifos("sum")
    # A slow sink and a writer in another process keep the pipe full, so the
    # FIFO is readable at every poll.
    reader = FifoReader(stdout_fifo, [lambda data: time.sleep(0.001)])
    reader.start()
    with open(stdout_fifo, "wb") as fifo:
        writer = subprocess.Popen(["yes"], stdout=fifo, stderr=subprocess.DEVNULL)
    try:
        while reader.bytes_read == 0 and not reader.join(0.01):
            pass
        reader.cancel()
        stopped = reader.join(JOIN_TIMEOUT)
    finally:
        writer.kill()
        writer.wait()
    assert stopped
    assert not reader.reached_eof


def test_fifo_reader_cancel_after_end(tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path)
    alloc.build(["sum"])
    stdout_fifo, _ = alloc.create_fifos("sum")
    reader = FifoReader(stdout_fifo, [])
    reader.start()
    _write_fifo(stdout_fifo, [b"x"])
    assert reader.join(JOIN_TIMEOUT)
    reader.cancel()  # must not write to the closed wake-up pipe
    assert reader.reached_eof


def test_task_logs_write_rotated_files(tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path)
    alloc.build(["sum"])
    stdout_fifo, stderr_fifo = alloc.create_fifos("sum")
    shown: list[bytes] = []
    logs = TaskLogs("sum", alloc.logs_dir, stdout_fifo, stderr_fifo, [shown.append])
    logs.start()
    writers = [
        threading.Thread(target=_write_fifo, args=(stdout_fifo, [b"out\n"])),
        threading.Thread(target=_write_fifo, args=(stderr_fifo, [b"err\n"])),
    ]
    for writer in writers:
        writer.start()
    assert logs.wait(JOIN_TIMEOUT)
    assert (alloc.logs_dir / "sum.stdout.0").read_bytes() == b"out\n"
    assert (alloc.logs_dir / "sum.stderr.0").read_bytes() == b"err\n"
    assert shown == [b"out\n"]


def test_task_logs_wait_gives_up_without_writer(tmp_path: Path) -> None:
    alloc = AllocDir(tmp_path)
    alloc.build(["sum"])
    stdout_fifo, stderr_fifo = alloc.create_fifos("sum")
    logs = TaskLogs("sum", alloc.logs_dir, stdout_fifo, stderr_fifo)
    logs.start()
    assert not logs.wait(0.2)
    assert (alloc.logs_dir / "sum.stdout.0").exists()


def test_file_rotator_rotates_and_purges(tmp_path: Path) -> None:
    rotator = FileRotator(tmp_path, "sum.stdout", max_files=2, max_file_size=4)
    rotator.write(b"abcdefghij")
    rotator.close()
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["sum.stdout.1", "sum.stdout.2"]
    assert (tmp_path / "sum.stdout.1").read_bytes() == b"efgh"
    assert (tmp_path / "sum.stdout.2").read_bytes() == b"ij"


def test_file_rotator_continues_after_existing(tmp_path: Path) -> None:
    (tmp_path / "sum.stdout.3").write_bytes(b"old")
    rotator = FileRotator(tmp_path, "sum.stdout")
    rotator.write(b"new")
    rotator.close()
    assert (tmp_path / "sum.stdout.3").read_bytes() == b"oldnew"


def test_file_rotator_invalid_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid log rotation max_files=0"):
        FileRotator(tmp_path, "sum.stdout", max_files=0)
