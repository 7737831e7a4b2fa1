"""The IO buffer protocol of the original driver, with every failure checked.

1. The input is `input_value` encoded as UTF-8, at most `size` bytes.
2. `func_name(*args)` returns the buffer's offset in the exported `memory`.
3. The input is copied to `memory[offset:]`.
4. The main function is called with the input length appended to its args.
5. Its result is the output length (0 reports failure), and
   `memory[offset:offset + length]` is the task's output, as raw bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

import wasmtime

from .calling import (
    call_function,
    extern_kind,
    find_function,
    list_names,
    signatures_from_module,
)
from .display import quote
from .engine import Interrupt
from .errors import TaskError
from .settings import IOBuffer, MainCall
from .wasmbinary import FuncSignature

MEMORY_EXPORT = "memory"


def run_io_buffer(
    store: wasmtime.Store,
    module: wasmtime.Module,
    exports: Mapping[str, object],
    buffer: IOBuffer,
    main: MainCall,
    interrupt: Interrupt,
    signatures: Mapping[str, FuncSignature] | None = None,
) -> bytes:
    """Run `main` through the IO buffer and return its output bytes.

    `signatures` are the exported function signatures read from the module
    file. Without them they are read through wasmtime's type API, which
    `signatures_from_module` restricts to modules without v128 signatures.
    """
    if signatures is None:
        signatures = signatures_from_module(module)
    data = encode_input(buffer)
    memory = find_memory(module, exports)
    offset = _buffer_offset(store, signatures, exports, buffer, interrupt)
    _check_range(store, memory, offset, len(data), "input")
    if data:
        memory.write(store, data, offset)

    main_func, signature = find_function(signatures, exports, main.func_name)
    main_args = (*main.args, len(data))
    result = call_function(
        store, main_func, main.func_name, signature, main_args, interrupt
    )
    length = _single_i32(main.func_name, signature, result, "output length")
    if length == 0:
        raise TaskError(
            f"function {quote(main.func_name)} returned 0, which reports a failure "
            "of the module"
        )
    if length < 0 or length > buffer.size:
        raise TaskError(
            f"function {quote(main.func_name)} returned output length {length}, "
            f"outside the io buffer size of {buffer.size} bytes "
            "(expected 1..size; raise ioBuffer.size if the output is that long)"
        )
    _check_range(store, memory, offset, length, "output")
    return bytes(memory.read(store, offset, offset + length))


def encode_input(buffer: IOBuffer) -> bytes:
    """Encode the input as UTF-8, or raise `TaskError` if it exceeds the size."""
    data = buffer.input_value.encode("utf-8")
    if len(data) > buffer.size:
        raise TaskError(
            f"io buffer input is {len(data)} bytes, more than the io buffer "
            f"size of {buffer.size} bytes; shorten inputValue or raise ioBuffer.size"
        )
    return data


def find_memory(
    module: wasmtime.Module, exports: Mapping[str, object]
) -> wasmtime.Memory:
    """Return the `memory` export, or raise `TaskError` naming what is wrong."""
    memory = exports.get(MEMORY_EXPORT)
    if isinstance(memory, wasmtime.Memory):
        return memory
    name = quote(MEMORY_EXPORT)
    if memory is not None and _is_shared_memory(module, memory):
        raise TaskError(
            f"the io buffer needs the memory exported as {name}, but it is a "
            "shared memory, which the io buffer does not support; export an "
            "unshared memory"
        )
    if memory is not None:
        raise TaskError(
            f"the io buffer needs a memory exported as {name}, but export {name} "
            f"is a {extern_kind(memory)}"
        )
    names = list_names([export.name for export in module.exports])
    raise TaskError(
        f"the io buffer needs a memory exported as {name}, which the module "
        f"does not export; its exports are: {names}"
    )


def _is_shared_memory(module: wasmtime.Module, export: object) -> bool:
    if isinstance(export, wasmtime.SharedMemory):
        return True
    for item in module.exports:
        if item.name == MEMORY_EXPORT and isinstance(item.type, wasmtime.MemoryType):
            return bool(item.type.is_shared)
    return False


def _buffer_offset(
    store: wasmtime.Store,
    signatures: Mapping[str, FuncSignature],
    exports: Mapping[str, object],
    buffer: IOBuffer,
    interrupt: Interrupt,
) -> int:
    func, signature = find_function(signatures, exports, buffer.func_name)
    result = call_function(
        store, func, buffer.func_name, signature, buffer.args, interrupt
    )
    offset = _single_i32(buffer.func_name, signature, result, "buffer offset")
    # A wasm32 pointer is unsigned; an i32 result is read back signed.
    return offset & 0xFFFF_FFFF


def _single_i32(name: str, signature: FuncSignature, result: object, what: str) -> int:
    result_types = signature.results
    if result_types != ("i32",) or not isinstance(result, int):
        returned = ", ".join(result_types) or "nothing"
        raise TaskError(
            f"function {quote(name)} must return one i32 ({what}) but returns {returned}"
        )
    return result


def _check_range(
    store: wasmtime.Store, memory: wasmtime.Memory, offset: int, length: int, what: str
) -> None:
    memory_size = memory.data_len(store)
    if offset + length > memory_size:
        raise TaskError(
            f"io buffer {what} of {length} bytes at offset {offset} ends at "
            f"{offset + length}, past the end of memory ({memory_size} bytes)"
        )
