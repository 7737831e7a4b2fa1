"""Compiled modules on disk, named by the content they were compiled from.

Layout under the cache directory:

    <engine-id>/fingerprint                         the engine fingerprint, for people
    <engine-id>/<module-sha256>-<file-sha256>.cwasm one compiled module

`engine-id` is a hash of the engine fingerprint, so engines whose machine code
differs never share files. `file-sha256` is the checksum of the `.cwasm` file
itself. A file with flipped bytes in its code usually deserializes, and would
run wrong machine code, so a file is read into memory once and checked against
its checksum before those same bytes are deserialized.

Files are never mapped. `Module.deserialize_file` maps the file, and the
process then gets SIGBUS when anyone truncates it. A file checked on one open
and mapped on a second could also be swapped in between. `Module.deserialize`
copies the bytes into memory that wasmtime owns, so later changes to the file
cannot reach a loaded module.

Files are written to a temporary name and renamed into place, so a reader in
another process never sees a half-written file. Anything else at the path of
an entry (a directory, a symbolic link, a FIFO) is removed: it belongs to the
cache by its name, and left there it would fail every write of that module.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .limits import MAX_ARTIFACT_BYTES, read_bounded

logger = logging.getLogger(__name__)

_ARTIFACT_NAME = re.compile(r"^([0-9a-f]{64})-([0-9a-f]{64})\.cwasm$")
_TEMP_PREFIX = ".tmp-"
# Another plugin process may be writing a temporary file right now; only
# files older than this are left over from a crash.
_STALE_TEMP_SECONDS = 3600.0


class CorruptArtifactError(Exception):
    """A compiled-module file whose content does not match its checksum, or
    that is not a regular file or is larger than MAX_ARTIFACT_BYTES."""


class EntryError(Exception):
    """A failure confined to one entry path; other entries can still be
    written."""


class FileStamp(NamedTuple):
    """The identity, size and mtime of a file, which change when it is replaced
    or rewritten."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Artifact:
    """One compiled module file."""

    digest: str  # SHA-256 of the module bytes it was compiled from
    checksum: str  # SHA-256 of the file itself
    path: Path
    mtime: float  # seconds since the epoch, when the file was stored


def engine_id(engine_fingerprint: str) -> str:
    return hashlib.sha256(engine_fingerprint.encode()).hexdigest()[:32]


class ArtifactStore:
    """The compiled-module files of one engine fingerprint under `root`."""

    def __init__(self, root: Path, engine_fingerprint: str) -> None:
        self.directory = root / engine_id(engine_fingerprint)
        self._fingerprint = engine_fingerprint

    def prepare(self) -> None:
        """Create the directory; raises OSError when that is not possible."""
        self.directory.mkdir(parents=True, exist_ok=True)
        label = self.directory / "fingerprint"
        if not label.exists():
            temp = _write_atomically(self.directory, self._fingerprint.encode())
            os.replace(temp, label)

    def scan(self) -> list[Artifact]:
        """Return the stored files, oldest first, and delete stale temporary files.

        When one module has several files (two processes compiled it), only the
        newest is returned and the others are deleted.
        """
        newest: dict[str, Artifact] = {}
        for entry in os.scandir(self.directory):
            try:
                artifact = self._artifact_of(entry)
            except (OSError, EntryError) as err:
                logger.warning(
                    "skipped cache entry %s: %s",
                    entry.path,
                    err,
                    extra={"error": str(err)},
                )
                continue
            if artifact is None:
                continue
            previous = newest.get(artifact.digest)
            if previous is not None:
                older = min(previous, artifact, key=lambda a: a.mtime)
                unlink_quietly(older.path)
                if older is artifact:
                    continue
            newest[artifact.digest] = artifact
        return sorted(newest.values(), key=lambda a: a.mtime)

    def _artifact_of(self, entry: os.DirEntry[str]) -> Artifact | None:
        """Return the artifact of `entry`, or None for any other name.

        Raises OSError when the entry cannot be stat'ed, and EntryError when it
        has an artifact's name but is not a regular file and cannot be removed.
        """
        try:
            status = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        mtime = status.st_mtime
        if entry.name.startswith(_TEMP_PREFIX):
            if time.time() - mtime > _STALE_TEMP_SECONDS:
                unlink_quietly(Path(entry.path))
            return None
        match = _ARTIFACT_NAME.match(entry.name)
        if match is None:
            return None
        if not stat.S_ISREG(status.st_mode):
            self.remove_entry(Path(entry.path))
            logger.warning("removed cache entry %s: not a regular file", entry.path)
            return None
        return Artifact(match[1], match[2], Path(entry.path), mtime)

    def remove_entry(self, path: Path) -> None:
        """Remove whatever is at entry `path`, without following a symbolic link.

        A directory is removed with its content, but only when it has an
        artifact's name inside this store's directory. Raises EntryError naming
        the path when the removal fails or the path is no entry of this store.
        """
        if path.parent != self.directory or not _ARTIFACT_NAME.match(path.name):
            raise EntryError(f"rejected removal of {str(path)!r}: not a cache entry")
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                # rmtree does not follow symbolic links inside the tree.
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as err:
            raise EntryError(f"failed to remove {str(path)!r}: {err}") from err

    def write(self, digest: str, data: bytes | bytearray) -> Artifact:
        """Store `data`, the compiled form of module `digest`.

        Raises OSError (ENOSPC, EROFS, EACCES, ...) when the directory cannot
        take the file, and EntryError when only this entry cannot be written
        (`data` is larger than MAX_ARTIFACT_BYTES, or something other than a
        file at its path cannot be replaced). Leaves no temporary file behind.
        """
        if len(data) > MAX_ARTIFACT_BYTES:
            raise EntryError(
                f"compiled module {digest} is too large to store: {len(data)}"
                f" bytes exceeds the limit of {MAX_ARTIFACT_BYTES} bytes"
            )
        checksum = hashlib.sha256(data).hexdigest()
        path = self.directory / f"{digest}-{checksum}.cwasm"
        temp = _write_atomically(self.directory, data)
        try:
            self._replace(temp, path)
        except BaseException:
            unlink_quietly(temp)
            raise
        return Artifact(digest, checksum, path, time.time())

    def _replace(self, temp: Path, path: Path) -> None:
        """Rename `temp` to `path`, removing a non-file at `path` first."""
        try:
            os.replace(temp, path)
            return
        except OSError:
            try:
                is_file = stat.S_ISREG(os.lstat(path).st_mode)
            except FileNotFoundError:
                is_file = True
            if is_file:
                raise  # the directory itself failed the rename
        self.remove_entry(path)
        logger.warning("removed cache entry %s: not a regular file", path)
        try:
            os.replace(temp, path)
        except OSError as err:
            raise EntryError(f"failed to store {str(path)!r}: {err}") from err

    def read_verified(self, artifact: Artifact) -> bytes:
        """Read the file of `artifact` once and return its bytes if they match
        its checksum.

        Raises CorruptArtifactError without reading the content when the path
        is not a regular file (a symbolic link included) or is larger than
        MAX_ARTIFACT_BYTES, and when the content does not match. Raises OSError (FileNotFoundError when another
        process evicted it) when the file cannot be read.
        """
        path = artifact.path
        # O_NONBLOCK keeps a FIFO put in place of the file from blocking the
        # open. It has no effect on regular files.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise CorruptArtifactError("not a regular file") from err
            raise
        try:
            data = _read_artifact(fd, path)
        finally:
            os.close(fd)
        checksum = hashlib.sha256(data).hexdigest()
        if checksum != artifact.checksum:
            raise CorruptArtifactError(
                f"checksum mismatch: expected sha256 {artifact.checksum},"
                f" found {checksum}"
            )
        return data


def _read_artifact(fd: int, path: Path) -> bytes:
    """Read the open file `fd`, checking its type and size before its bytes."""
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        raise CorruptArtifactError("not a regular file")
    _check_artifact_size(status.st_size)
    try:
        data = read_bounded(fd, status.st_size, MAX_ARTIFACT_BYTES)
    except OSError as err:
        # Name the path: errors of an fd-level read carry no file name.
        raise OSError(err.errno, err.strerror, str(path)) from err
    _check_artifact_size(len(data))  # the file grew after fstat
    return data


def _check_artifact_size(size: int) -> None:
    if size > MAX_ARTIFACT_BYTES:
        raise CorruptArtifactError(
            f"file size {size} bytes exceeds the limit of {MAX_ARTIFACT_BYTES}"
            " bytes for a compiled module"
        )


def _write_atomically(directory: Path, data: bytes | bytearray) -> Path:
    """Write `data` to a new temporary file in `directory` and return its path.

    No fsync: after a power loss a torn file fails its checksum and is
    recompiled, which is cheaper than syncing every store.
    """
    fd, name = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX, suffix=".cwasm")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except BaseException:
        unlink_quietly(Path(name))
        raise
    return Path(name)


def unlink_quietly(path: Path) -> None:
    """Delete `path`; a file that is already gone or cannot be deleted is logged."""
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        logger.warning(
            "failed to delete cache file %s: %s", path, err, extra={"error": str(err)}
        )
