"""Run one task: pick the function, link WASI if needed, call it, write output."""

from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import wasmtime

from .calling import (
    call_function,
    check_printable_results,
    find_function,
    format_results,
    signatures_from_module,
    trap_reason,
)
from .display import quote_path
from .engine import Interrupt, TaskInterrupted, create_store
from .errors import ModuleError, TaskError
from .iobuffer import run_io_buffer
from .settings import DEFAULT_MAIN_FUNC, TaskConfig
from .wasi import check_imports, create_linker, uses_wasi, wasi_config
from .wasmbinary import FuncSignature, read_function_exports

__all__ = ["TaskIO", "TaskInterrupted", "resolve_module_path", "run_task"]

logger = logging.getLogger(__name__)

# Text of wasmtime's error (wasmtime 50) for a module with a shared memory.
# The driver's engine never enables shared memory, so such modules fail.
_SHARED_MEMORY_DISABLED = "shared memory support is disabled"

WASI_START = "_start"
# WASI reactors export this to initialise libc; it runs before any other export.
WASI_INITIALIZE = "_initialize"


@dataclass(frozen=True)
class TaskIO:
    """Output files, environment and directories of one task run."""

    stdout: BinaryIO  # function results and io buffer output
    stderr: BinaryIO  # WASI stderr
    task_dir: Path  # relative WASI preopens start here
    alloc_dir: Path  # every WASI preopen must be inside it
    module_name: str  # argv[0] of a WASI program
    env: Mapping[str, str] = field(default_factory=dict)  # WASI environment
    # Nomad's memory limit for the task; linear memories and tables may not
    # grow past it. 0 leaves only wasmtime's own limits.
    memory_limit_bytes: int = 0
    # The file `module` was compiled from. The driver reads function
    # signatures from it, because wasmtime-py 50 aborts the process when asked
    # for a signature that contains v128. None falls back to wasmtime's type
    # API, which is only safe for modules without such signatures.
    module_path: Path | None = None


def resolve_module_path(module_path: str, task_dir: Path, cwd: Path) -> Path:
    """Find a task's module file.

    An absolute path is used as it is. A relative path is looked up in the task
    directory, where Nomad's artifact block puts downloads, and then in the
    agent's working directory, where the original driver looked. Raises
    `ModuleError` when no candidate is a regular file.
    """
    if "\0" in module_path:
        raise ModuleError(
            f"invalid modulePath {quote_path(module_path)}: it contains a NUL character"
        )
    path = Path(module_path)
    candidates = [path] if path.is_absolute() else [task_dir / path, cwd / path]
    problem = None
    for candidate in candidates:
        kind = _file_kind(candidate)
        if kind == "file":
            return candidate
        if kind != "missing" and problem is None:
            problem = f"module file {quote_path(candidate)} {kind}"
    if problem is not None:
        raise ModuleError(f"{problem}; set modulePath to a .wasm file")
    if path.is_absolute():
        raise ModuleError(f"module file {quote_path(module_path)} not found")
    raise ModuleError(
        f"module file {quote_path(module_path)} not found in the task directory "
        f"({quote_path(task_dir)}) or the agent's working directory "
        f"({quote_path(cwd)})"
    )


def _file_kind(path: Path) -> str:
    """Return "file", "missing", or what else is at `path` as a message part."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            return f"cannot be opened: path too long ({len(str(path))} characters)"
        return f"cannot be opened: {err.strerror or err}"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "is a directory"
    return "is not a regular file"


def run_task(
    engine: wasmtime.Engine,
    module: wasmtime.Module,
    config: TaskConfig,
    io: TaskIO,
    interrupt: Interrupt,
) -> int:
    """Run a task to its end and return its exit code.

    Raises `TaskInterrupted` after `interrupt.request()`, `ModuleError` for
    imports or linking that fail, and `TaskError` for every other failure.
    A WASI `proc_exit(n)` returns n.
    """
    with_wasi = uses_wasi(module)
    signatures = _function_signatures(module, io)
    with ExitStack() as wasi_scope:
        store = create_store(engine, interrupt)
        if io.memory_limit_bytes > 0:
            store.set_limits(memory_size=io.memory_limit_bytes)
        linker = create_linker(engine) if with_wasi else wasmtime.Linker(engine)
        check_imports(linker, store, module)
        if with_wasi:
            store.set_wasi(wasi_scope.enter_context(_wasi_config(config, io)))
        try:
            exports = _instantiate(linker, store, module, interrupt)
            _run_main(store, module, exports, signatures, config, io, interrupt)
        except wasmtime.ExitTrap as exit_trap:
            return exit_trap.code
    return 0


def _function_signatures(
    module: wasmtime.Module, io: TaskIO
) -> Mapping[str, FuncSignature]:
    if io.module_path is None:
        return signatures_from_module(module)
    return read_function_exports(io.module_path)


def _wasi_config(
    config: TaskConfig, io: TaskIO
) -> AbstractContextManager[wasmtime.WasiConfig]:
    return wasi_config(
        config.wasi,
        program_name=io.module_name,
        env=io.env,
        stdout=io.stdout,
        stderr=io.stderr,
        task_dir=io.task_dir,
        alloc_dir=io.alloc_dir,
    )


def _instantiate(
    linker: wasmtime.Linker,
    store: wasmtime.Store,
    module: wasmtime.Module,
    interrupt: Interrupt,
) -> Mapping[str, object]:
    try:
        instance = linker.instantiate(store, module)
    except wasmtime.ExitTrap:
        raise
    except (wasmtime.Trap, wasmtime.WasmtimeError) as err:
        # A start function that spins is stopped like any other code.
        if interrupt.requested:
            raise TaskInterrupted() from None
        reason = trap_reason(err)
        if _SHARED_MEMORY_DISABLED in reason:
            reason = (
                "the module defines a shared memory (from the WebAssembly threads "
                "proposal), which the driver does not support; build it without "
                "shared memory"
            )
        raise ModuleError(f"failed to instantiate module: {reason}") from None
    exports: Mapping[str, object] = instance.exports(store)
    return exports


def _run_main(
    store: wasmtime.Store,
    module: wasmtime.Module,
    exports: Mapping[str, object],
    signatures: Mapping[str, FuncSignature],
    config: TaskConfig,
    io: TaskIO,
    interrupt: Interrupt,
) -> None:
    if WASI_INITIALIZE in exports:
        initialize, signature = find_function(signatures, exports, WASI_INITIALIZE)
        call_function(store, initialize, WASI_INITIALIZE, signature, (), interrupt)
    if config.io_buffer.enabled:
        output = run_io_buffer(
            store,
            module,
            exports,
            config.io_buffer,
            config.main,
            interrupt,
            signatures,
        )
        _write(io.stdout, output)
        return
    func_name = choose_function(config, exports)
    func, signature = find_function(signatures, exports, func_name)
    check_printable_results(func_name, signature)
    result = call_function(
        store, func, func_name, signature, config.main.args, interrupt
    )
    _write(io.stdout, format_results(signature, result).encode())


def choose_function(config: TaskConfig, exports: Mapping[str, object]) -> str:
    """Return the function to call without the IO buffer.

    A WASI command runs its `_start` when the job leaves `mainFuncName` at
    its default and the module exports `_start` but no `handle_buffer`.
    """
    name = config.main.func_name
    if name == DEFAULT_MAIN_FUNC and name not in exports and WASI_START in exports:
        return WASI_START
    return name


def _write(stream: BinaryIO, data: bytes) -> None:
    if not data:
        return
    try:
        stream.write(data)
        stream.flush()
    except OSError as err:
        raise TaskError(f"failed to write task output: {err}") from err
