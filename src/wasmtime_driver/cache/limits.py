"""Size limits of module and compiled-module files, and reading within them."""

from __future__ import annotations

import os

# A chosen limit, not one that wasmtime or the WebAssembly spec sets. Loading a
# module keeps its bytes, wasmtime's compile state and the machine code in
# memory at once, several times the module size. One oversized file could
# therefore exhaust the node's memory and take every task down with the plugin.
MAX_MODULE_BYTES = 512 * 1024 * 1024

# Compiled code is larger than the module it was compiled from.
# NOTE: the multiple is an estimate, not a measured bound. A module whose
# compiled form exceeds it still runs, but is not stored.
MAX_ARTIFACT_BYTES = 4 * MAX_MODULE_BYTES

# Reads past the size that fstat reported (a file growing while it is read)
# go in steps of this many bytes, so the limit is never allocated at once.
_CHUNK_BYTES = 1024 * 1024


def read_bounded(fd: int, expected: int, limit: int) -> bytes:
    """Read `fd` to its end, but no more than `limit + 1` bytes.

    `expected` is the size fstat reported. A result longer than `limit` means
    the file is too large, and callers must reject it.
    """
    parts: list[bytes] = []
    total = 0
    first = min(expected, limit + 1)
    while total <= limit:
        if total < first:
            request = first - total
        else:
            request = min(_CHUNK_BYTES, limit + 1 - total)
        chunk = os.read(fd, request)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)
