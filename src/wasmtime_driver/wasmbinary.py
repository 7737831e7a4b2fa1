"""Signatures of a module's exported functions, read from the WebAssembly binary.

wasmtime-py 50 aborts the process (a Rust panic across its C API) when Python
reads a value type it does not model, such as v128. The driver therefore reads
each exported function's signature from the module file and checks it before
it calls wasmtime's type API for that function.

No library is used. wasm-tools 2.1.0, the recently released binary parser on
PyPI, reads the whole file into memory and decodes every section, code
included, and wasm 1.2 was last released in 2019. This reader parses only the
type, import, function and export sections and seeks past every other
section, so a module with a 20 MB code section costs a few KB of reads.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from .errors import ModuleError

__all__ = [
    "FuncSignature",
    "parse_function_exports",
    "read_function_exports",
]

_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\x00\x00\x00"
_HEADER_SIZE = 8

_TYPE_SECTION = 1
_IMPORT_SECTION = 2
_FUNCTION_SECTION = 3
_EXPORT_SECTION = 7
_PARSED_SECTIONS = (_TYPE_SECTION, _IMPORT_SECTION, _FUNCTION_SECTION, _EXPORT_SECTION)

_FUNC_KIND = 0x00
_TABLE_KIND = 0x01
_MEMORY_KIND = 0x02
_GLOBAL_KIND = 0x03
_TAG_KIND = 0x04

# Value types encoded in one byte: numbers, v128, and the reference types
# whose heap type is abstract (the shorthands of the GC proposal included).
VALUE_TYPE_NAMES = {
    0x7F: "i32",
    0x7E: "i64",
    0x7D: "f32",
    0x7C: "f64",
    0x7B: "v128",
    0x70: "funcref",
    0x6F: "externref",
    0x6E: "anyref",
    0x6D: "eqref",
    0x6C: "i31ref",
    0x6B: "structref",
    0x6A: "arrayref",
    0x69: "exnref",
    0x68: "contref",
    0x71: "nullref",
    0x72: "nullexternref",
    0x73: "nullfuncref",
    0x74: "nullexnref",
    0x75: "nullcontref",
}
# Abstract heap types after a (ref ...) prefix, spelled as in the text format.
_HEAP_TYPE_NAMES = {
    code: name.removesuffix("ref")
    for code, name in VALUE_TYPE_NAMES.items()
    if name.endswith("ref")
}
_REF = 0x64
_REF_NULL = 0x63
_PACKED_TYPES = {0x78: "i8", 0x77: "i16"}

_FUNC_TYPE = 0x60
_STRUCT_TYPE = 0x5F
_ARRAY_TYPE = 0x5E
_CONT_TYPE = 0x5D
_REC_GROUP = 0x4E
_SUB_TYPE = 0x50
_SUB_FINAL_TYPE = 0x4F

_T = TypeVar("_T")


@dataclass(frozen=True)
class FuncSignature:
    """Parameter and result types of a function, as text-format type names."""

    params: tuple[str, ...]
    results: tuple[str, ...]


class _Malformed(Exception):
    """A decoding failure; the caller adds the file name."""


class _Reader:
    """A cursor over one section's bytes that reports absolute file offsets."""

    def __init__(self, data: bytes, base_offset: int) -> None:
        self._data = data
        self._position = 0
        self._base = base_offset

    @property
    def offset(self) -> int:
        return self._base + self._position

    @property
    def at_end(self) -> bool:
        return self._position == len(self._data)

    def fail(self, problem: str, offset: int | None = None) -> _Malformed:
        at = self.offset if offset is None else offset
        return _Malformed(f"{problem} at byte offset {at}")

    def peek(self) -> int:
        if self._position >= len(self._data):
            raise self.fail("unexpected end of data")
        return self._data[self._position]

    def byte(self) -> int:
        if self._position >= len(self._data):
            raise self.fail("unexpected end of data")
        value = self._data[self._position]
        self._position += 1
        return value

    def read_bytes(self, count: int) -> bytes:
        if self._position + count > len(self._data):
            raise self.fail(f"{count}-byte field runs past the end of its section")
        value = self._data[self._position : self._position + count]
        self._position += count
        return value

    def u32(self) -> int:
        return _read_unsigned_leb(self.byte, 32, self.fail)

    def u64(self) -> int:
        return _read_unsigned_leb(self.byte, 64, self.fail)

    def s33(self) -> int:
        return _read_signed_leb(self.byte, 33, self.fail)

    def name(self) -> str:
        raw = self.read_bytes(self.u32())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"name {raw!r} is not valid UTF-8") from None

    def vector(self, read_item: Callable[[], _T]) -> list[_T]:
        return [read_item() for _ in range(self.u32())]


def _read_unsigned_leb(
    next_byte: Callable[[], int], bits: int, fail: Callable[[str], _Malformed]
) -> int:
    result = 0
    for shift in range(0, bits + 7, 7):
        byte = next_byte()
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >> bits:
                raise fail(f"LEB128 value does not fit in u{bits}")
            return result
    raise fail(f"LEB128 value is longer than u{bits} allows")


def _read_signed_leb(
    next_byte: Callable[[], int], bits: int, fail: Callable[[str], _Malformed]
) -> int:
    result = 0
    for shift in range(0, bits + 7, 7):
        byte = next_byte()
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte & 0x40:
                result -= 1 << (shift + 7)
            if not -(1 << (bits - 1)) <= result < 1 << (bits - 1):
                raise fail(f"LEB128 value does not fit in s{bits}")
            return result
    raise fail(f"LEB128 value is longer than s{bits} allows")


def read_function_exports(path: Path) -> dict[str, FuncSignature]:
    """Read the signature of every exported function of the module file `path`.

    Returns them by export name, in export order. Raises `ModuleError` naming
    the file when it cannot be read or is not a valid core module binary.
    """
    try:
        with path.open("rb") as stream:
            return parse_function_exports(stream, str(path))
    except OSError as err:
        raise ModuleError(
            f"failed to read module file {str(path)!r}: {err.strerror or err}"
        ) from None


def parse_function_exports(stream: BinaryIO, source: str) -> dict[str, FuncSignature]:
    """Parse exported function signatures from a seekable binary stream.

    `source` names the module in error messages.
    """
    try:
        return _parse_module(stream)
    except _Malformed as err:
        raise ModuleError(
            f"module file {source!r} is not a valid WebAssembly module: {err}"
        ) from None


@dataclass
class _ModuleTables:
    types: list[FuncSignature | None]
    function_types: list[int]
    exports: list[tuple[str, int]]


def _parse_module(stream: BinaryIO) -> dict[str, FuncSignature]:
    _check_header(stream.read(_HEADER_SIZE))
    file_size = stream.seek(0, io.SEEK_END)
    offset = stream.seek(_HEADER_SIZE)
    tables = _ModuleTables(types=[], function_types=[], exports=[])
    while offset < file_size:
        section_id, size, offset = _read_section_header(stream, offset)
        if offset + size > file_size:
            raise _Malformed(
                f"section {section_id} of {size} bytes at byte offset {offset} "
                f"runs past the end of the file ({file_size} bytes)"
            )
        if section_id in _PARSED_SECTIONS:
            stream.seek(offset)
            _parse_section(tables, section_id, _Reader(stream.read(size), offset))
        offset = stream.seek(offset + size)
    return _resolve_exports(tables)


def _check_header(header: bytes) -> None:
    if len(header) < _HEADER_SIZE or header[:4] != _MAGIC:
        raise _Malformed("the file does not start with the \\0asm magic number")
    version = header[4:]
    if version != _CORE_VERSION:
        # Component model binaries share the magic number but not the version.
        raise _Malformed(
            f"binary format version {version.hex()} is not 01000000; only core "
            "modules are supported, not components"
        )


def _read_section_header(stream: BinaryIO, offset: int) -> tuple[int, int, int]:
    header = _Reader(stream.read(6), offset)
    section_id = header.byte()
    size = header.u32()
    return section_id, size, header.offset


def _parse_section(tables: _ModuleTables, section_id: int, reader: _Reader) -> None:
    if section_id == _TYPE_SECTION:
        for group in reader.vector(lambda: _read_rec_group(reader)):
            tables.types.extend(group)
    elif section_id == _IMPORT_SECTION:
        for type_index in reader.vector(lambda: _read_import(reader)):
            if type_index is not None:
                tables.function_types.append(type_index)
    elif section_id == _FUNCTION_SECTION:
        tables.function_types.extend(reader.vector(reader.u32))
    else:
        tables.exports.extend(
            item for item in reader.vector(lambda: _read_export(reader)) if item
        )
    if not reader.at_end:
        raise reader.fail(f"section {section_id} has unread bytes")


def _read_rec_group(reader: _Reader) -> list[FuncSignature | None]:
    """Read one type section entry. Each subtype in it takes one type index."""
    if reader.peek() != _REC_GROUP:
        return [_read_sub_type(reader)]  # a lone subtype is a group of one
    reader.byte()
    return reader.vector(lambda: _read_sub_type(reader))


def _read_sub_type(reader: _Reader) -> FuncSignature | None:
    form = reader.byte()
    if form in (_SUB_TYPE, _SUB_FINAL_TYPE):
        reader.vector(reader.u32)  # supertype indices
        form = reader.byte()
    return _read_composite_type(reader, form)


def _read_composite_type(reader: _Reader, form: int) -> FuncSignature | None:
    """Read a type definition, returning a signature only for a function type."""
    form_offset = reader.offset - 1
    if form == _FUNC_TYPE:
        params = reader.vector(lambda: _read_value_type(reader))
        results = reader.vector(lambda: _read_value_type(reader))
        return FuncSignature(tuple(params), tuple(results))
    if form == _STRUCT_TYPE:
        reader.vector(lambda: _read_field_type(reader))
    elif form == _ARRAY_TYPE:
        _read_field_type(reader)
    elif form == _CONT_TYPE:
        reader.s33()
    else:
        raise reader.fail(f"unsupported type definition form 0x{form:02x}", form_offset)
    return None


def _read_field_type(reader: _Reader) -> None:
    code = reader.byte()
    if code not in _PACKED_TYPES:
        _value_type_from_code(reader, code)
    reader.byte()  # mutability


def _read_value_type(reader: _Reader) -> str:
    return _value_type_from_code(reader, reader.byte())


def _value_type_from_code(reader: _Reader, code: int) -> str:
    if code in VALUE_TYPE_NAMES:
        return VALUE_TYPE_NAMES[code]
    if code in (_REF, _REF_NULL):
        nullable = "null " if code == _REF_NULL else ""
        return f"(ref {nullable}{_read_heap_type(reader)})"
    # An unknown code may be followed by operands, so parsing cannot go on.
    raise reader.fail(f"unsupported value type 0x{code:02x}", reader.offset - 1)


def _read_heap_type(reader: _Reader) -> str:
    start = reader.offset
    heap_type = reader.s33()
    if heap_type >= 0:
        return str(heap_type)  # a type index
    code = heap_type & 0x7F
    if heap_type < -0x40 or code not in _HEAP_TYPE_NAMES:
        raise reader.fail(f"unsupported heap type {heap_type}", start)
    return _HEAP_TYPE_NAMES[code]


def _read_import(reader: _Reader) -> int | None:
    """Read one import; returns its type index if it is a function."""
    reader.name()
    reader.name()
    kind = reader.byte()
    if kind == _FUNC_KIND:
        return reader.u32()
    if kind == _TABLE_KIND:
        _read_value_type(reader)
        _read_limits(reader)
    elif kind == _MEMORY_KIND:
        _read_limits(reader)
    elif kind == _GLOBAL_KIND:
        _read_value_type(reader)
        reader.byte()  # mutability
    elif kind == _TAG_KIND:
        reader.byte()  # attribute
        reader.u32()
    else:
        raise reader.fail(f"unsupported import kind 0x{kind:02x}", reader.offset - 1)
    return None


def _read_limits(reader: _Reader) -> None:
    # Flag bits: 0x01 a maximum follows, 0x02 shared (threads), 0x04 64-bit
    # (memory64), 0x08 a page size exponent follows (custom page sizes).
    flags = reader.byte()
    if flags & ~0x0F:
        raise reader.fail(f"unsupported limits flags 0x{flags:02x}", reader.offset - 1)
    reader.u64()
    if flags & 0x01:
        reader.u64()
    if flags & 0x08:
        reader.u32()


def _read_export(reader: _Reader) -> tuple[str, int] | None:
    name = reader.name()
    kind = reader.byte()
    index = reader.u32()
    return (name, index) if kind == _FUNC_KIND else None


def _resolve_exports(tables: _ModuleTables) -> dict[str, FuncSignature]:
    signatures: dict[str, FuncSignature] = {}
    for name, func_index in tables.exports:
        if func_index >= len(tables.function_types):
            raise _Malformed(
                f"export {name!r} refers to function {func_index}, but the module "
                f"has {len(tables.function_types)} functions"
            )
        signatures[name] = _function_type(tables, tables.function_types[func_index])
    return signatures


def _function_type(tables: _ModuleTables, type_index: int) -> FuncSignature:
    if type_index >= len(tables.types):
        raise _Malformed(
            f"type index {type_index} is out of range; the module defines "
            f"{len(tables.types)} types"
        )
    signature = tables.types[type_index]
    if signature is None:
        raise _Malformed(f"type {type_index} of a function is not a function type")
    return signature
