"""Compiling module bytes with wasmtime, for WebAssembly binaries only."""

from __future__ import annotations

from pathlib import Path

import wasmtime

from ..errors import ModuleError

WASM_MAGIC = b"\0asm"


def check_wasm_binary(data: bytes, path: Path) -> None:
    """Raise ModuleError unless `data`, read from `path`, is a WebAssembly binary.

    `wasmtime.Module` also accepts the text format, and its parse errors quote
    the failing source line. Any file the plugin can read could be named as a
    module, so only binaries reach the compiler, and errors never contain file
    content.
    """
    if not data:
        raise ModuleError(f"module file {str(path)!r} is empty")
    if not data.startswith(WASM_MAGIC):
        raise ModuleError(
            f"module file {str(path)!r} is not a WebAssembly binary (it does not"
            " start with the \\0asm magic bytes): modulePath must name a compiled"
            " .wasm file, and WebAssembly text (.wat) must be compiled to .wasm"
            " first"
        )


def compile_module(engine: wasmtime.Engine, data: bytes, path: Path) -> wasmtime.Module:
    """Compile `data`, read from `path`; raises ModuleError naming the path."""
    check_wasm_binary(data, path)
    try:
        return wasmtime.Module(engine, data)
    except wasmtime.WasmtimeError as err:
        raise ModuleError(f"failed to compile module {str(path)!r}: {err}") from err
