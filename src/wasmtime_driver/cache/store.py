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
another process never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

logger = logging.getLogger(__name__)

_ARTIFACT_NAME = re.compile(r"^([0-9a-f]{64})-([0-9a-f]{64})\.cwasm$")
_TEMP_PREFIX = ".tmp-"
# Another plugin process may be writing a temporary file right now; only
# files older than this are left over from a crash.
_STALE_TEMP_SECONDS = 3600.0


class CorruptArtifactError(Exception):
    """A compiled-module file whose content does not match its checksum."""


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
            artifact = self._artifact_of(entry)
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
        try:
            mtime = entry.stat().st_mtime
        except FileNotFoundError:
            return None
        if entry.name.startswith(_TEMP_PREFIX):
            if time.time() - mtime > _STALE_TEMP_SECONDS:
                unlink_quietly(Path(entry.path))
            return None
        match = _ARTIFACT_NAME.match(entry.name)
        if match is None:
            return None
        return Artifact(match[1], match[2], Path(entry.path), mtime)

    def write(self, digest: str, data: bytes | bytearray) -> Artifact:
        """Store `data`, the compiled form of module `digest`.

        Raises OSError (ENOSPC, EROFS, EACCES, ...) and leaves no temporary
        file behind.
        """
        checksum = hashlib.sha256(data).hexdigest()
        path = self.directory / f"{digest}-{checksum}.cwasm"
        temp = _write_atomically(self.directory, data)
        try:
            os.replace(temp, path)
        except OSError:
            unlink_quietly(temp)
            raise
        return Artifact(digest, checksum, path, time.time())

    def read_verified(self, artifact: Artifact) -> bytes:
        """Read the file of `artifact` once and return its bytes if they match
        its checksum.

        Raises CorruptArtifactError when the content does not match or the
        path is not a regular file, and OSError (FileNotFoundError when another
        process evicted it) when the file cannot be read.
        """
        # O_NONBLOCK keeps a FIFO put in place of the file from blocking the
        # open. It has no effect on regular files.
        # NOTE: the file is read whole before its checksum can fail, so a file
        # grown to gigabytes by someone with write access to the cache
        # directory costs that much memory for the time of one load.
        fd = os.open(artifact.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CorruptArtifactError("not a regular file")
            data = file.read()
        checksum = hashlib.sha256(data).hexdigest()
        if checksum != artifact.checksum:
            raise CorruptArtifactError(
                f"checksum mismatch: expected sha256 {artifact.checksum},"
                f" found {checksum}"
            )
        return data


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
