"""Logging in go-hclog's JSON format, which the Nomad agent parses from stderr.

The go-plugin host reads the plugin's stderr line by line. A line that is a
JSON object is re-logged through the agent's logger at its `@level`, with the
other keys as key/value pairs. The host's hclog code (go-hclog 1.6) asserts
that `@level`, `@message` and `@timestamp` are strings: any other type panics
and takes the whole agent down. A `@timestamp` that does not match Go's layout
`2006-01-02T15:04:05.000000Z07:00` makes the host log the raw line at debug.
"""

from __future__ import annotations

import json
import logging
import math
import os
import traceback
from datetime import UTC, datetime
from typing import Any

LEVEL_ENV_VAR = "WASMTIME_DRIVER_LOG_LEVEL"

# Nomad's agent filters plugin output by its own log_level, so the plugin
# emits everything down to debug unless WASMTIME_DRIVER_LOG_LEVEL is set.
DEFAULT_LEVEL = "debug"

# Libraries whose debug output is noise in the agent's log: grpc's Cython
# layer logs "Loaded running loop" on every call.
QUIET_LOGGERS = ("asyncio", "grpc._cython.cygrpc")

# Python has no trace level; hclog's trace sits below debug.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS_BY_NAME = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


def hclog_level(levelno: int) -> str:
    """Return the hclog level name for a Python logging level number."""
    if levelno < logging.DEBUG:
        return "trace"
    if levelno < logging.INFO:
        return "debug"
    if levelno < logging.WARNING:
        return "info"
    if levelno < logging.ERROR:
        return "warn"
    return "error"


def format_timestamp(created: float) -> str:
    """Format a `time.time()` value as UTC in Go's layout with microseconds."""
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.isoformat(timespec="microseconds")


class HclogFormatter(logging.Formatter):
    """Format each record as one compact hclog JSON object, without a newline.

    Fields passed through `extra` become top-level keys. Exception and stack
    information go into the `exception` and `stack` keys as strings, so the
    output never contains a raw newline.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry = self._extra_fields(record)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        entry.update(
            {
                "@level": hclog_level(record.levelno),
                "@message": _message(record, entry),
                "@module": record.name,
                "@timestamp": format_timestamp(record.created),
            }
        )
        return json.dumps(entry, separators=(",", ":"), default=str)

    @staticmethod
    def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES:
                continue
            # Go's JSON decoder rejects NaN and infinities, which would turn
            # the whole line into raw text.
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            fields[key] = value
        return fields


def _message(record: logging.LogRecord, entry: dict[str, Any]) -> str:
    """Return the record's message, falling back to its raw parts on a bad format."""
    try:
        return record.getMessage()
    except (TypeError, ValueError, KeyError) as err:
        entry["error"] = f"invalid log format arguments: {err}"
        return f"{record.msg!r} % {record.args!r}"


class HclogHandler(logging.Handler):
    """Write formatted records to a file descriptor, one line per write.

    Writing straight to the descriptor keeps no buffered text behind: when
    the agent dies and the pipe breaks, the line is dropped instead of being
    retried on every later write or raising at interpreter exit.
    """

    def __init__(self, fd: int = 2) -> None:
        super().__init__()
        self.fd = fd
        self.setFormatter(HclogFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        # Formatting runs arbitrary __str__ methods of extra fields, and a
        # logging handler must not raise into the code that logs.
        except Exception:  # noqa: BLE001
            line = _fallback_line(record)
        data = line.encode("utf-8", "backslashreplace")
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except OSError:
            # BrokenPipeError included: the reader has closed the pipe, so the
            # line is dropped.
            pass


def _fallback_line(record: logging.LogRecord) -> str:
    entry = {
        "@level": "error",
        "@message": "failed to format log record",
        "@module": __name__,
        "@timestamp": format_timestamp(record.created),
        "record_message": str(record.msg),
        "error": traceback.format_exc(),
    }
    return json.dumps(entry, separators=(",", ":"), default=repr) + "\n"


def resolve_level(level: str | int | None) -> int:
    """Return the logging level number for an hclog or Python level name.

    `None` reads `WASMTIME_DRIVER_LOG_LEVEL`, falling back to debug.
    """
    if isinstance(level, int):
        return level
    name = level if level is not None else os.environ.get(LEVEL_ENV_VAR)
    if not name:
        name = DEFAULT_LEVEL
    try:
        return LEVELS_BY_NAME[name.strip().lower()]
    except KeyError:
        names = ", ".join(LEVELS_BY_NAME)
        source = "log level" if level is not None else LEVEL_ENV_VAR
        raise ValueError(
            f"invalid {source} {name!r}: expected one of {names}"
        ) from None


def configure_logging(level: str | int | None = None) -> None:
    """Install hclog JSON output on the root logger, writing to stderr.

    `level` overrides `WASMTIME_DRIVER_LOG_LEVEL`. An invalid value in that
    variable falls back to debug with a warning, because the plugin must
    start anyway. An invalid `level` argument raises ValueError.
    """
    try:
        levelno = resolve_level(level)
        warning = None
    except ValueError as err:
        if level is not None:
            raise
        levelno = resolve_level(DEFAULT_LEVEL)
        warning = str(err)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, HclogHandler):
            root.removeHandler(handler)
    root.addHandler(HclogHandler())
    root.setLevel(levelno)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(levelno, logging.INFO))
    if warning is not None:
        logging.getLogger(__name__).warning("%s; using %s", warning, DEFAULT_LEVEL)
