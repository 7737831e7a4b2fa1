from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import wasmtime

from wasmtime_driver.calling import signatures_from_module
from wasmtime_driver.engine import create_engine
from wasmtime_driver.errors import ModuleError
from wasmtime_driver.wasmbinary import (
    FuncSignature,
    parse_function_exports,
    read_function_exports,
)

MODULES = Path(__file__).parent.parent / "example" / "wasm-modules"
ENGINE = create_engine()

IMPORTS_WAT = """
(module
  (import "env" "memory" (memory 1 2))
  (import "env" "table" (table 1 funcref))
  (import "env" "g" (func (param i64)))
  (import "env" "flag" (global (mut i32)))
  (import "env" "h" (func (param f32) (result f64)))
  (func $own (param i32) (result i32) local.get 0)
  (export "own" (func $own))
  (export "first_import" (func 0))
  (export "second_import" (func 1))
  (export "memory" (memory 0)))
"""


class CountingReader(io.BytesIO):
    """A binary stream that counts the bytes handed out by read()."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def parse_wat(wat: str) -> dict[str, FuncSignature]:
    return parse_function_exports(io.BytesIO(wasmtime.wat2wasm(wat)), "test.wasm")


def sig(params: str, results: str) -> FuncSignature:
    return FuncSignature(tuple(params.split()), tuple(results.split()))


@pytest.mark.parametrize(
    "path", sorted(MODULES.glob("*.wasm")), ids=lambda path: path.name
)
def test_read_function_exports_example_modules(path: Path) -> None:
    scanned = read_function_exports(path)
    assert scanned
    assert scanned == signatures_from_module(wasmtime.Module.from_file(ENGINE, path))


def test_read_function_exports_sum_example() -> None:
    assert read_function_exports(MODULES / "sum.wasm") == {"sum": sig("i32 i32", "i32")}


def test_parse_function_exports_imports_shift_indices() -> None:
    assert parse_wat(IMPORTS_WAT) == {
        "own": sig("i32", "i32"),
        "first_import": sig("i64", ""),
        "second_import": sig("f32", "f64"),
    }


def test_parse_function_exports_multi_value() -> None:
    wat = """
    (module (func (export "f") (param i64 f32) (result i32 i64 f64)
      i32.const 1 i64.const 2 f64.const 3))
    """
    assert parse_wat(wat) == {"f": sig("i64 f32", "i32 i64 f64")}


def test_parse_function_exports_vector_and_references() -> None:
    wat = """
    (module
      (func (export "simd") (param v128 i32) (result v128) local.get 0)
      (func (export "refs") (param externref funcref) (result funcref)
        local.get 1))
    """
    assert parse_wat(wat) == {
        "simd": sig("v128 i32", "v128"),
        "refs": sig("externref funcref", "funcref"),
    }


def test_parse_function_exports_shared_type() -> None:
    wat = """
    (module
      (type $binary (func (param i32 i32) (result i32)))
      (func (export "add") (type $binary) local.get 0 local.get 1 i32.add)
      (func (export "sub") (type $binary) local.get 0 local.get 1 i32.sub)
      (export "add_again" (func 0)))
    """
    expected = sig("i32 i32", "i32")
    assert parse_wat(wat) == {"add": expected, "sub": expected, "add_again": expected}


def test_parse_function_exports_gc_types() -> None:
    # Rec groups, subtypes, structs and arrays each take one type index.
    wat = """
    (module
      (rec
        (type $point (struct (field i32) (field (mut f64))))
        (type $bytes (array (mut i8))))
      (type $base (sub (func (param i32))))
      (type $derived (sub final $base (func (param i32))))
      (type $take (func (param (ref null $point) anyref (ref func))))
      (func (export "base") (type $base))
      (func (export "derived") (type $derived))
      (func (export "take") (type $take)))
    """
    assert parse_wat(wat) == {
        "base": sig("i32", ""),
        "derived": sig("i32", ""),
        "take": FuncSignature(("(ref null 0)", "anyref", "(ref func)"), ()),
    }


def test_parse_function_exports_skips_code_section() -> None:
    # About 2 MB of code, none of which the reader may read.
    body = "i32.const 1 drop " * 50_000
    funcs = "".join(f"(func (param i32) {body})" for _ in range(20))
    wat = f'(module {funcs} (func (export "f") (param i64) (result i32) i32.const 0))'
    binary = wasmtime.wat2wasm(wat)
    assert len(binary) > 2_000_000
    stream = CountingReader(binary)
    assert parse_function_exports(stream, "big.wasm") == {"f": sig("i64", "i32")}
    assert stream.bytes_read < 4096


def test_parse_function_exports_no_exports() -> None:
    assert parse_wat("(module (func))") == {}


@pytest.mark.parametrize(
    ("binary", "message"),
    [
        (b"", "does not start with the \\\\0asm magic number"),
        (b"\x7fELF\x02\x01\x01\x00", "does not start with the \\\\0asm magic number"),
        (b"\0asm\x0d\x00\x01\x00", "version 0d000100 is not 01000000.*not components"),
        (b"\0asm\x01\x00\x00\x00\x01\x05\x01\x60", "section 1 of 5 bytes at byte "),
        (b"\0asm\x01\x00\x00\x00\x01", "unexpected end of data at byte offset 9"),
        (
            b"\0asm\x01\x00\x00\x00\x00\xff\xff\xff\xff\x7f",
            "LEB128 value does not fit in u32",
        ),
        (
            b"\0asm\x01\x00\x00\x00\x01\x05\x01\x60\x00\x00\x00",
            "section 1 has unread bytes",
        ),
        (
            b"\0asm\x01\x00\x00\x00\x01\x04\x01\x60\x01\x01",
            "unsupported value type 0x01 at byte offset 13",
        ),
        (
            b"\0asm\x01\x00\x00\x00\x07\x05\x01\x01f\x00\x00",
            "export 'f' refers to function 0, but the module has 0 functions",
        ),
        (
            b"\0asm\x01\x00\x00\x00\x03\x02\x01\x03\x07\x05\x01\x01f\x00\x00",
            "type index 3 is out of range; the module defines 0 types",
        ),
        (
            b"\0asm\x01\x00\x00\x00\x07\x05\x01\x01\xff\x00\x00",
            "name b'\\\\xff' is not valid UTF-8",
        ),
    ],
    ids=[
        "empty",
        "elf",
        "component",
        "section-past-end",
        "truncated-header",
        "leb-overflow",
        "unread-bytes",
        "bad-value-type",
        "export-out-of-range",
        "type-out-of-range",
        "bad-utf8",
    ],
)
def test_parse_function_exports_malformed(binary: bytes, message: str) -> None:
    with pytest.raises(ModuleError, match=f"'bad.wasm' is not a valid .*{message}"):
        parse_function_exports(io.BytesIO(binary), "bad.wasm")


def test_parse_function_exports_struct_as_function() -> None:
    binary = wasmtime.wat2wasm('(module (type (struct)) (func (export "f")))')
    # Point the function at type 0, the struct, in place of its func type.
    function_section = b"\x03\x02\x01\x01"
    assert function_section in binary
    broken = binary.replace(function_section, b"\x03\x02\x01\x00")
    with pytest.raises(ModuleError, match="type 0 of a function is not a function"):
        parse_function_exports(io.BytesIO(broken), "bad.wasm")


def test_parse_function_exports_every_truncation() -> None:
    binary = wasmtime.wat2wasm(IMPORTS_WAT)
    for length in range(len(binary)):
        stream = io.BytesIO(binary[:length])
        try:
            parse_function_exports(stream, "cut.wasm")
        except ModuleError as err:
            assert "'cut.wasm' is not a valid WebAssembly module" in str(err)


def test_parse_function_exports_corrupted_bytes() -> None:
    binary = wasmtime.wat2wasm(IMPORTS_WAT)
    rng = random.Random(1234)
    for _ in range(2000):
        corrupted = bytearray(binary)
        corrupted[rng.randrange(8, len(binary))] = rng.randrange(256)
        try:
            parse_function_exports(io.BytesIO(bytes(corrupted)), "fuzz.wasm")
        except ModuleError as err:
            assert "'fuzz.wasm' is not a valid WebAssembly module" in str(err)


def test_read_function_exports_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.wasm"
    with pytest.raises(ModuleError, match="failed to read module file '.*absent.wasm'"):
        read_function_exports(path)


def test_read_function_exports_names_file(tmp_path: Path) -> None:
    path = tmp_path / "text.wasm"
    path.write_text("(module)")
    with pytest.raises(ModuleError, match="text.wasm' is not a valid WebAssembly"):
        read_function_exports(path)
