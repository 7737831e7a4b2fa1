"""SHA-256 digests of module files, memoized by the file's stat."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from pathlib import Path

import cachetools

from ..errors import ModuleError
from .compiler import check_wasm_binary
from .limits import MAX_MODULE_BYTES, read_bounded
from .store import FileStamp

# Paths remembered; each entry is a few hundred bytes.
_MEMO_PATHS = 4096
# File systems store mtime with a granularity of up to 2 s (FAT; ext4 uses the
# kernel's coarse clock, a few ms). A file modified within this window of the
# read could be modified again with the same mtime and size, so its digest is
# not memoized, as git does for "racily clean" index entries.
_RACY_WINDOW_NS = 2_000_000_000
# The magic bytes and version field that start every WebAssembly binary.
_HEADER_BYTES = 8


class DigestMemo:
    """Maps (path, device, inode, size, mtime) to the SHA-256 of the file.

    An unchanged file is not hashed again. A file replaced by rename has a new
    inode, and one rewritten in place a new mtime, so neither is served stale.
    """

    def __init__(self) -> None:
        # LRU so a stream of distinct paths cannot grow the memo without bound.
        self._memo: cachetools.LRUCache[str, tuple[FileStamp, str]] = (
            cachetools.LRUCache(_MEMO_PATHS)
        )
        self._lock = threading.Lock()

    def lookup(self, path: Path) -> str | None:
        """Return the memoized digest of `path` if the file is unchanged."""
        key = os.fspath(path)
        with self._lock:
            known = self._memo.get(key)
        if known is None:
            return None
        try:
            stamp = FileStamp.of(os.stat(path))
        except OSError:
            return None
        return known[1] if stamp == known[0] else None

    def read(self, path: Path) -> tuple[bytes, str]:
        """Read `path` once and return its bytes and their SHA-256.

        Raises ModuleError naming the path when the file cannot be read.
        """
        data, stamp = read_module_file(path)
        digest = hashlib.sha256(data).hexdigest()
        if stamp is not None and not _is_racy(stamp):
            with self._lock:
                self._memo[os.fspath(path)] = (stamp, digest)
        return data, digest


def read_module_file(path: Path) -> tuple[bytes, FileStamp | None]:
    """Read `path` and return its bytes and stamp.

    The file is opened once, and its type, size and magic bytes are checked
    before more than its first bytes are read. The stamp is None when the file
    changed while it was read. Raises ModuleError naming the path when the file
    cannot be read, is not a regular file, is empty, is not a WebAssembly
    binary or is larger than MAX_MODULE_BYTES.
    """
    try:
        # O_NONBLOCK keeps a FIFO named as the module from blocking the open.
        # It has no effect on regular files.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return _read_checked(fd, path)
        finally:
            os.close(fd)
    except OSError as err:
        reason = err.strerror or str(err)
        raise ModuleError(f"failed to read module {str(path)!r}: {reason}") from err


def _read_checked(fd: int, path: Path) -> tuple[bytes, FileStamp | None]:
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        raise ModuleError(
            f"module file {str(path)!r} is not a regular file: modulePath must"
            " name a compiled .wasm file"
        )
    check_wasm_binary(os.pread(fd, _HEADER_BYTES, 0), path)
    _check_size(status.st_size, path)
    data = read_bounded(fd, status.st_size, MAX_MODULE_BYTES)
    _check_size(len(data), path)  # the file grew after fstat
    before = FileStamp.of(status)
    after = FileStamp.of(os.fstat(fd))
    return data, after if before == after else None


def _check_size(size: int, path: Path) -> None:
    if size > MAX_MODULE_BYTES:
        raise ModuleError(
            f"module file {str(path)!r} is too large: {size} bytes exceeds the"
            f" limit of {MAX_MODULE_BYTES} bytes: modulePath must name a smaller"
            " module"
        )


def _is_racy(stamp: FileStamp) -> bool:
    return stamp.mtime_ns >= time.time_ns() - _RACY_WINDOW_NS
