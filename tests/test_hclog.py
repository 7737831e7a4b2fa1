"""Check hclog JSON formatting and the stderr handler on real records and pipes."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from wasmtime_driver import hclog

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)")


def make_record(
    level: int = logging.INFO,
    msg: object = "task started",
    args: tuple[object, ...] = (),
    extra: dict[str, Any] | None = None,
    exc_info: Any = None,
) -> logging.LogRecord:
    logger = logging.getLogger("wasmtime_driver.test")
    return logger.makeRecord(
        logger.name, level, __file__, 1, msg, args, exc_info, extra=extra
    )


def format_entry(record: logging.LogRecord) -> dict[str, Any]:
    line = hclog.HclogFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert isinstance(entry, dict)
    return entry


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(
    ("levelno", "expected"),
    [
        (hclog.TRACE, "trace"),
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "error"),
    ],
    ids=["trace", "debug", "info", "warning", "error", "critical"],
)
def test_hclog_level_names(levelno: int, expected: str) -> None:
    assert format_entry(make_record(level=levelno))["@level"] == expected


def test_hclog_required_keys() -> None:
    entry = format_entry(make_record(msg="started %s", args=("task-1",)))

    assert entry["@message"] == "started task-1"
    assert entry["@module"] == "wasmtime_driver.test"
    assert TIMESTAMP.fullmatch(entry["@timestamp"])


def test_hclog_timestamp_go_layout() -> None:
    record = make_record()
    record.created = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC).timestamp()

    stamp = format_entry(record)["@timestamp"]

    assert TIMESTAMP.fullmatch(stamp)
    assert datetime.fromisoformat(stamp).timestamp() == record.created
    assert stamp.startswith("2024-05-01T12:00:00.123456")


def test_hclog_message_always_string() -> None:
    assert format_entry(make_record(msg=42))["@message"] == "42"
    assert format_entry(make_record(msg=None))["@message"] == "None"


def test_hclog_bad_format_arguments() -> None:
    entry = format_entry(make_record(msg="%d tasks", args=("many",)))

    assert isinstance(entry["@message"], str)
    assert "%d tasks" in entry["@message"]
    assert "invalid log format arguments" in entry["error"]


def test_hclog_extra_fields_top_level() -> None:
    extra = {"task_id": "a/b/c", "alloc_id": "a", "error": ValueError("boom")}
    entry = format_entry(make_record(extra=extra))

    assert entry["task_id"] == "a/b/c"
    assert entry["alloc_id"] == "a"
    assert entry["error"] == "boom"
    assert "msg" not in entry
    assert "args" not in entry


def test_hclog_extra_cannot_replace_message() -> None:
    entry = format_entry(make_record(msg="real", extra={"@message": 7}))

    assert entry["@message"] == "real"


def test_hclog_non_finite_float_extra() -> None:
    line = hclog.HclogFormatter().format(make_record(extra={"ratio": math.nan}))

    # Go's encoding/json rejects NaN literals.
    assert "NaN" not in line
    assert json.loads(line)["ratio"] == "nan"


def test_hclog_exception_single_line() -> None:
    try:
        raise RuntimeError("module failed\nsecond line")
    except RuntimeError:
        record = make_record(level=logging.ERROR, exc_info=sys.exc_info())

    entry = format_entry(record)

    assert "RuntimeError: module failed\nsecond line" in entry["exception"]
    assert entry["@level"] == "error"


def test_hclog_handler_writes_line() -> None:
    read_fd, write_fd = os.pipe()
    try:
        hclog.HclogHandler(write_fd).handle(make_record(msg="to pipe"))
        data = os.read(read_fd, 65536)
    finally:
        os.close(read_fd)
        os.close(write_fd)

    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1
    assert json.loads(data)["@message"] == "to pipe"


def test_hclog_handler_broken_pipe() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        # Python ignores SIGPIPE, so the write fails with BrokenPipeError.
        hclog.HclogHandler(write_fd).handle(make_record(msg="nobody reads"))
    finally:
        os.close(write_fd)


def test_hclog_handler_unformattable_extra() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    read_fd, write_fd = os.pipe()
    try:
        hclog.HclogHandler(write_fd).handle(make_record(extra={"obj": Unprintable()}))
        entry = json.loads(os.read(read_fd, 65536))
    finally:
        os.close(read_fd)
        os.close(write_fd)

    assert entry["@message"] == "failed to format log record"
    assert entry["record_message"] == "task started"


def test_hclog_configure_env_level(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(hclog.LEVEL_ENV_VAR, "WARN")
    hclog.configure_logging()

    handlers = [h for h in root_logger.handlers if isinstance(h, hclog.HclogHandler)]
    assert len(handlers) == 1
    assert handlers[0].fd == 2
    assert root_logger.level == logging.WARNING


def test_hclog_configure_default_debug(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(hclog.LEVEL_ENV_VAR, raising=False)
    hclog.configure_logging()
    hclog.configure_logging()

    handlers = [h for h in root_logger.handlers if isinstance(h, hclog.HclogHandler)]
    assert len(handlers) == 1
    assert root_logger.level == logging.DEBUG


def test_hclog_configure_argument_wins(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(hclog.LEVEL_ENV_VAR, "error")
    hclog.configure_logging("trace")

    assert root_logger.level == hclog.TRACE


def test_hclog_configure_invalid_env_falls_back(
    root_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(hclog.LEVEL_ENV_VAR, "loud")
    hclog.configure_logging()

    assert root_logger.level == logging.DEBUG
    warning = json.loads(capfd.readouterr().err.splitlines()[-1])
    assert warning["@level"] == "warn"
    assert "invalid WASMTIME_DRIVER_LOG_LEVEL 'loud'" in warning["@message"]


def test_hclog_configure_invalid_argument(root_logger: logging.Logger) -> None:
    with pytest.raises(ValueError, match="invalid log level 'loud': expected one of"):
        hclog.configure_logging("loud")
