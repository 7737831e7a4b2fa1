"""Compiled modules on disk, named by the content they were compiled from.

Layout under the cache directory:

    <engine-id>/fingerprint                         the engine fingerprint, for people
    <engine-id>/<module-sha256>-<file-sha256>.cwasm one compiled module

`engine-id` is a hash of the engine fingerprint, so engines whose machine code
differs never share files. `file-sha256` is the checksum of the `.cwasm` file
itself. wasmtime 50 rejects truncated files, because their ELF section headers
sit at the end. A file with flipped bytes in its code usually deserializes,
though, and would run wrong machine code. So a file is checked against its
checksum before this process first maps it.

Files are written to a temporary name and renamed into place. A file is never
rewritten in place, because a process that has it mapped through
`Module.deserialize_file` gets SIGBUS when the file shrinks under it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
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
            temp, _ = _write_atomically(self.directory, self._fingerprint.encode())
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

    def write(self, digest: str, data: bytes | bytearray) -> tuple[Artifact, FileStamp]:
        """Store `data`, the compiled form of module `digest`.

        Returns the artifact and the stamp of the file as written, which counts
        as verified. Raises OSError (ENOSPC, EROFS, EACCES, ...) and leaves no
        temporary file behind.
        """
        checksum = hashlib.sha256(data).hexdigest()
        path = self.directory / f"{digest}-{checksum}.cwasm"
        temp, stamp = _write_atomically(self.directory, data)
        try:
            os.replace(temp, path)
        except OSError:
            unlink_quietly(temp)
            raise
        return Artifact(digest, checksum, path, time.time()), stamp

    def verify(self, artifact: Artifact, known: FileStamp | None) -> FileStamp:
        """Check the file against its checksum unless its stamp is `known`.

        Returns the stamp of the verified file. Raises CorruptArtifactError
        when the content does not match, and OSError (FileNotFoundError when
        another process evicted it) when the file cannot be read.
        """
        with open(artifact.path, "rb") as file:
            stamp = FileStamp.of(os.fstat(file.fileno()))
            if stamp == known:
                return stamp
            checksum = hashlib.file_digest(file, "sha256").hexdigest()
        if checksum != artifact.checksum:
            raise CorruptArtifactError(
                f"checksum mismatch: expected sha256 {artifact.checksum},"
                f" found {checksum}"
            )
        return stamp


def _write_atomically(
    directory: Path, data: bytes | bytearray
) -> tuple[Path, FileStamp]:
    """Write `data` to a new temporary file in `directory`; return it and its stamp.

    No fsync: after a power loss a torn file fails its checksum and is
    recompiled, which is cheaper than syncing every store.
    """
    fd, name = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX, suffix=".cwasm")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            stamp = FileStamp.of(os.fstat(file.fileno()))
    except BaseException:
        unlink_quietly(Path(name))
        raise
    return Path(name), stamp


def unlink_quietly(path: Path) -> None:
    """Delete `path`; a file that is already gone or cannot be deleted is logged."""
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        logger.warning(
            "failed to delete cache file %s: %s", path, err, extra={"error": str(err)}
        )
