"""Formatting of values in error messages: JSON-like text, short numbers.

Strings are in double quotes, long values are cut to a readable length, and
numbers too long to read are shown in scientific notation.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack

# Numbers that go-cty sends as text are plain decimal text; Python's Decimal
# would also accept spaces, underscores, "Infinity" and "NaN".
DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
# Longer decimal text is rejected before parsing, so that no number costs
# more than a bounded amount of work to convert or compare.
MAX_NUMBER_TEXT = 1000

_MAX_SHOWN_CHARS = 60
_MAX_SHOWN_PATH = 300
_MAX_SHOWN_DIGITS = 20
_MAX_SHOWN_ITEMS = 4
_MAX_SHOWN_DEPTH = 2


def quote(text: str, limit: int = _MAX_SHOWN_CHARS) -> str:
    """Return `text` in double quotes, escaped as in JSON and cut after `limit`."""
    if len(text) <= limit:
        return json.dumps(text, ensure_ascii=False)
    head = json.dumps(text[:limit], ensure_ascii=False)
    return f'{head[:-1]}..." ({len(text)} characters)'


def quote_path(path: str | Path) -> str:
    """Return a file path quoted, cut only when longer than most real paths."""
    return quote(str(path), _MAX_SHOWN_PATH)


def show_number(value: float | str | Decimal) -> str:
    """Return a number as short text: as given, or in scientific notation if long.

    Floats use Python's shortest text, and infinities and NaN their JSON
    spelling. Text that is not plain decimal text is quoted.
    """
    if isinstance(value, float):
        return _show_float(value)
    if isinstance(value, str):
        if len(value) > MAX_NUMBER_TEXT or DECIMAL_TEXT.fullmatch(value) is None:
            return quote(value)
        if len(value) <= _MAX_SHOWN_DIGITS:
            return value
    number = Decimal(value)
    # adjusted() is checked first: format "f" writes every digit of 1e999999.
    small = abs(number.adjusted()) <= _MAX_SHOWN_DIGITS
    if small and len(number.as_tuple().digits) <= _MAX_SHOWN_DIGITS:
        return format(number, "f")
    return _scientific(number)


def _show_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _scientific(value: Decimal) -> str:
    # 17 significant digits identify any float64; more only make noise.
    mantissa, _, exponent = format(value, ".16e").partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    sign = "-" if exponent.startswith("-") else "+"
    return f"{mantissa}e{sign}{exponent.lstrip('+-')}"


def show_value(raw: Any, depth: int = 0) -> str:
    """Return a decoded msgpack value as short JSON-like text."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return show_number(raw)
    if isinstance(raw, str):
        return quote(raw)
    if isinstance(raw, bytes):
        return f"<{len(raw)} bytes of binary data>"
    if isinstance(raw, msgpack.ExtType):  # a namedtuple, so before tuple
        return f"<msgpack extension type {raw.code}>"
    if isinstance(raw, list | tuple):
        if depth >= _MAX_SHOWN_DEPTH:
            return "[...]" if raw else "[]"
        items = [show_value(item, depth + 1) for item in raw[:_MAX_SHOWN_ITEMS]]
        return _show_items(items, len(raw), "[]")
    if isinstance(raw, Mapping):
        if depth >= _MAX_SHOWN_DEPTH:
            return "{...}" if raw else "{}"
        pairs = itertools.islice(raw.items(), _MAX_SHOWN_ITEMS)
        items = [
            f"{show_value(k, depth + 1)}: {show_value(v, depth + 1)}" for k, v in pairs
        ]
        return _show_items(items, len(raw), "{}")
    return f"<{type(raw).__name__}>"


def _show_items(items: list[str], count: int, brackets: str) -> str:
    text = ", ".join(items)
    if count > len(items):
        text += f", ... ({count} items)"
    return f"{brackets[0]}{text}{brackets[1]}"
