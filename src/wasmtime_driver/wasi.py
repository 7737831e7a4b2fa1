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

from .errors import ModuleError, TaskError
from .settings import WasiPreopen, WasiSettings

logger = logging.getLogger(__name__)

WASI_MODULE = "wasi_snapshot_preview1"


def _import_kind(extern_type: object) -> str:
    kinds = {
        wasmtime.FuncType: "function",
        wasmtime.MemoryType: "memory",
        wasmtime.GlobalType: "global",
        wasmtime.TableType: "table",
    }
    return kinds.get(type(extern_type), type(extern_type).__name__)


def check_imports(module: wasmtime.Module) -> bool:
    """Raise `ModuleError` for imports other than WASI; return whether WASI is used."""
    uses_wasi = False
    for item in module.imports:
        if item.module != WASI_MODULE:
            raise ModuleError(
                f"module imports {item.module!r}.{item.name!r} "
                f"({_import_kind(item.type)}), which this driver does not provide; "
                f"only {WASI_MODULE} imports are supported"
            )
        uses_wasi = True
    return uses_wasi


def create_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """Create a linker that provides WASI preview 1."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    return linker


def check_wasi_imports(
    linker: wasmtime.Linker, store: wasmtime.Store, module: wasmtime.Module
) -> None:
    """Raise `ModuleError` naming the first WASI import wasmtime does not provide."""
    for item in module.imports:
        try:
            linker.get(store, item.module, item.name or "")
        except wasmtime.WasmtimeError:
            raise ModuleError(
                f"module imports {item.module!r}.{item.name!r} "
                f"({_import_kind(item.type)}), which wasmtime's {WASI_MODULE} "
                "does not provide"
            ) from None


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
    `env` alone; stdin is empty; the module sees no files except the granted
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
            f"wasi preopen {preopen.host_path!r} has an empty guest path; "
            'set it to the name the module opens, for example "/data"'
        )
    allowed = alloc_dir.resolve()
    resolved = (task_dir / preopen.host_path).resolve()
    if not resolved.is_relative_to(allowed):
        raise TaskError(
            f"wasi preopen host path {preopen.host_path!r} resolves to "
            f"{str(resolved)!r}, which is outside the allocation directory; "
            f"it must be inside {str(allowed)!r}"
        )
    if not resolved.is_dir():
        raise TaskError(
            f"wasi preopen host path {preopen.host_path!r} ({str(resolved)!r}) "
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
# interpreter exit that thread is killed while it holds Rust frames, and the
# process aborts with "panic in a function that cannot unwind". These
# callbacks have no finalizer, and the function pointer lives as long as the
# process.
_OutputCallback = ctypes.CFUNCTYPE(
    ctypes.c_ssize_t, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t
)
_WRITE_OUTPUT = _OutputCallback(_write_output)
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
