"""Relaying a plugin's stderr, which carries hclog JSON lines, as readable text.

The rules follow go-plugin's `logStderr` (v1.4 to v1.6). A line that parses
as a JSON object is an hclog entry with `@level`, `@message` and an optional
`@timestamp` in Go's layout with six fractional digits. Every other key of
the object is a key/value pair. A line that is not JSON is logged at the level named by
a `[TRACE]` ... `[ERROR]` prefix, else at debug. A JSON object without a
known level is logged verbatim at debug.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

LEVELS = ("trace", "debug", "info", "warn", "error")
DEFAULT_LEVEL = "warn"

# go-plugin reads stderr through a 64 KiB buffer; longer lines arrive in
# pieces and are logged raw at debug.
MAX_LINE_BYTES = 64 * 1024

_GO_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"

Writer = Callable[[str], None]


def level_number(name: str) -> int:
    """Return the rank of an hclog level name ("warning" is accepted for warn)."""
    normalized = name.strip().lower()
    if normalized == "warning":
        normalized = "warn"
    try:
        return LEVELS.index(normalized)
    except ValueError:
        raise ValueError(
            f"invalid log level {name!r}: expected one of {', '.join(LEVELS)}"
        ) from None


def write_stderr(text: str) -> None:
    """Write a whole line to our stderr, ignoring a closed stream."""
    with _STDERR_LOCK:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


_STDERR_LOCK = threading.Lock()


class PluginLogRelay:
    """Formats a plugin's stderr lines and writes those at or above a level.

    The last few lines are kept whatever their level, so that an error about
    a plugin that failed to start can quote them.
    """

    def __init__(
        self,
        plugin_name: str,
        level: str = DEFAULT_LEVEL,
        write: Writer = write_stderr,
        tail_lines: int = 20,
    ) -> None:
        self.plugin_name = plugin_name
        self.min_level = level_number(level)
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self._write = write

    def relay_line(self, raw: bytes) -> None:
        """Write one stderr line (without its newline) if its level is shown."""
        level, formatted = self.format_line(raw)
        self.tail.append(formatted)
        if LEVELS.index(level) >= self.min_level:
            self._write(formatted + "\n")

    def format_line(self, raw: bytes) -> tuple[str, str]:
        """Return the hclog level and the readable form of a stderr line."""
        text = raw.decode("utf-8", "replace").rstrip("\r")
        entry = _parse_entry(text)
        if entry is None:
            level = _prefix_level(text)
            return level, self._render(level, text, None, {})
        level = str(entry.pop("@level", "")).lower()
        if level not in LEVELS:
            return "debug", self._render("debug", text, None, {})
        message = str(entry.pop("@message", ""))
        timestamp = entry.pop("@timestamp", None)
        return level, self._render(level, message, timestamp, entry)

    async def relay_stream(self, stream: asyncio.StreamReader) -> None:
        """Relay every line of `stream` until EOF."""
        pending = b""
        while chunk := await stream.read(MAX_LINE_BYTES):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.relay_line(line)
            if len(pending) >= MAX_LINE_BYTES:
                # go-plugin logs the pieces of an over-long line raw at debug.
                self._relay_raw(pending)
                pending = b""
        if pending:
            self.relay_line(pending)

    def _relay_raw(self, piece: bytes) -> None:
        formatted = self._render("debug", piece.decode("utf-8", "replace"), None, {})
        self.tail.append(formatted)
        if LEVELS.index("debug") >= self.min_level:
            self._write(formatted + "\n")

    def _render(
        self, level: str, message: str, timestamp: Any, fields: dict[str, Any]
    ) -> str:
        when = _format_timestamp(timestamp)
        tag = f"[{level.upper()}]".ljust(7)
        inline = {k: v for k, v in fields.items() if not _is_multiline(v)}
        pairs = "".join(f" {key}={_format_value(v)}" for key, v in inline.items())
        separator = ":" if pairs else ""
        line = f"{when} {tag} {self.plugin_name}: {message}{separator}{pairs}"
        # hclog's text format puts multi-line values (tracebacks) below the
        # line, each line prefixed with "  | ".
        for key, value in fields.items():
            if _is_multiline(value):
                body = "\n".join(
                    f"  | {part}" for part in value.rstrip("\n").split("\n")
                )
                line += f"\n  {key}=\n{body}"
        return line


def _parse_entry(text: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(text)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    return entry


def _prefix_level(text: str) -> str:
    for level in LEVELS:
        if text.startswith(f"[{level.upper()}]"):
            return level
    return "debug"


def _format_timestamp(value: Any) -> str:
    moment = None
    if isinstance(value, str):
        try:
            moment = datetime.strptime(value, _GO_TIMESTAMP_FORMAT)
        except ValueError:
            moment = None
    if moment is None:
        moment = datetime.now().astimezone()
    # hclog's own text layout: milliseconds and a numeric zone.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}{moment.strftime('%z')}"
    )


def _is_multiline(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value.rstrip("\n")


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value) if (" " in value or not value) else value
    return json.dumps(value, separators=(",", ":"))
