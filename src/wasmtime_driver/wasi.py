"""WASI preview 1 for tasks: import checks, linking, and the sandbox settings.

Output goes through wasmtime's custom stdout and stderr callbacks into the
task's open log streams. Those accept any writable binary file object (a Nomad
log FIFO, a regular file, a pipe), whereas `WasiConfig.stdout_file` reopens a
path with truncation, which would wipe a regular log file, and shares no file
offset with the driver's own writes.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import wasmtime
from wasmtime import _ffi as ffi

from .calling import extern_kind
from .display import quote, quote_path
from .errors import ModuleError, TaskError
from .settings import WasiPreopen, WasiSettings

logger = logging.getLogger(__name__)

WASI_MODULE = "wasi_snapshot_preview1"


# Unsupported imports listed in an error message, at most.
_MAX_LISTED_IMPORTS = 10


def uses_wasi(module: wasmtime.Module) -> bool:
    """Return whether `module` imports anything from WASI preview 1."""
    return any(item.module == WASI_MODULE for item in module.imports)


def create_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """Create a linker that provides WASI preview 1."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    return linker


def check_imports(
    linker: wasmtime.Linker, store: wasmtime.Store, module: wasmtime.Module
) -> None:
    """Raise `ModuleError` listing every import that `linker` does not provide.

    Only WASI imports are looked up: the driver provides nothing else. The
    import types are never read in full, because wasmtime-py 50 aborts the
    process on a v128 in them.
    """
    unsupported = []
    for item in module.imports:
        name = f"{quote(item.module)}.{quote(item.name or '')}"
        kind = extern_kind(item.type)
        if item.module != WASI_MODULE:
            unsupported.append(f"{name} ({kind}, not from {WASI_MODULE})")
        elif not _linker_provides(linker, store, item.module, item.name or ""):
            unsupported.append(f"{name} ({kind}, unknown to wasmtime's WASI)")
    if not unsupported:
        return
    listed = ", ".join(unsupported[:_MAX_LISTED_IMPORTS])
    if len(unsupported) > _MAX_LISTED_IMPORTS:
        listed += f" and {len(unsupported) - _MAX_LISTED_IMPORTS} more"
    count = len(unsupported)
    raise ModuleError(
        f"module has {count} unsupported import{'' if count == 1 else 's'}: "
        f"{listed}; the driver provides only the {WASI_MODULE} functions "
        "of wasmtime"
    )


def _linker_provides(
    linker: wasmtime.Linker, store: wasmtime.Store, module: str, name: str
) -> bool:
    try:
        linker.get(store, module, name)
    except wasmtime.WasmtimeError:
        return False
    return True


@contextmanager
def wasi_config(
    settings: WasiSettings,
    *,
    program_name: str,
    env: Mapping[str, str],
    stdout: BinaryIO,
    stderr: BinaryIO,
    task_dir: Path,
    alloc_dir: Path,
) -> Iterator[wasmtime.WasiConfig]:
    """Build the WASI context of one task, valid until the block ends.

    argv is `program_name` followed by `settings.args`; the environment is
    `env` alone; stdin is empty; the module can open no files except the granted
    preopens, each of which must lie inside `alloc_dir`. Output written after
    the block ends fails with EIO.
    """
    config = wasmtime.WasiConfig()
    config.argv = [program_name, *settings.args]
    config.env = sorted(env.items())
    for preopen in settings.preopens:
        host_path = resolve_preopen(preopen, task_dir, alloc_dir)
        config.preopen_dir(str(host_path), preopen.guest_path, not preopen.read_only)
    stdout_key = _register_output(stdout, "stdout")
    stderr_key = _register_output(stderr, "stderr")
    try:
        ffi.wasi_config_set_stdout_custom(
            config.ptr(), _WRITE_OUTPUT, stdout_key, _NO_FINALIZER
        )
        ffi.wasi_config_set_stderr_custom(
            config.ptr(), _WRITE_OUTPUT, stderr_key, _NO_FINALIZER
        )
        yield config
    finally:
        _OUTPUTS.pop(stdout_key, None)
        _OUTPUTS.pop(stderr_key, None)


def resolve_preopen(preopen: WasiPreopen, task_dir: Path, alloc_dir: Path) -> Path:
    """Resolve a preopen's host path and check that it is a directory in `alloc_dir`.

    Relative paths start at `task_dir`; symlinks and ".." are resolved before
    the check, so neither can lead outside the allocation.
    """
    if not preopen.guest_path:
        raise TaskError(
            f"wasi preopen {quote_path(preopen.host_path)} has an empty guest path; "
            'set it to the name the module opens, for example "/data"'
        )
    allowed = alloc_dir.resolve()
    resolved = (task_dir / preopen.host_path).resolve()
    if not resolved.is_relative_to(allowed):
        raise TaskError(
            f"wasi preopen host path {quote_path(preopen.host_path)} resolves to "
            f"{quote_path(resolved)}, which is outside the allocation directory; "
            f"it must be inside {quote_path(allowed)}"
        )
    if not resolved.is_dir():
        raise TaskError(
            f"wasi preopen host path {quote_path(preopen.host_path)} ({quote_path(resolved)}) "
            "is not an existing directory"
        )
    return resolved


# Output streams of running WASI tasks, keyed by the integer that wasmtime
# passes back as the callback's data pointer. The GIL makes each dict
# operation atomic.
_OUTPUTS: dict[int, tuple[BinaryIO, str]] = {}
_OUTPUT_KEYS = itertools.count(1)


def _register_output(stream: BinaryIO, name: str) -> int:
    key = next(_OUTPUT_KEYS)
    _OUTPUTS[key] = (stream, name)
    return key


def _write_output(key: int | None, data: Any, size: int) -> int:
    # wasmtime calls this during the module's fd_write, which waits for it, so
    # the bytes are written before the WASI call returns. It must not raise:
    # ctypes would print the exception to the process stdout, which the
    # plugin reserves for the go-plugin handshake.
    entry = _OUTPUTS.get(key or 0)
    if entry is None:
        return -errno.EIO
    stream, name = entry
    try:
        stream.write(ctypes.string_at(data, size))
        stream.flush()
    except Exception as err:  # noqa: BLE001 - see the comment above
        logger.warning("failed to write task %s: %s", name, err)
        return -errno.EIO
    return size


# wasmtime-py's own `stdout_custom` registers a Python finalizer, which
# wasmtime may run on one of its tokio threads after the store is gone. At
# interpreter exit that thread is killed while Rust frames are on its stack, and the
# process aborts with "panic in a function that cannot unwind". These
# callbacks have no finalizer, and the function pointer lives as long as the
# process.
_OutputCallback = ctypes.CFUNCTYPE(
    ctypes.c_ssize_t, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t
)
_WRITE_OUTPUT = _OutputCallback(_write_output)
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
