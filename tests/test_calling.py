from __future__ import annotations

import math
import struct

import pytest
import wasmtime

from wasmtime_driver.calling import (
    call_function,
    convert_args,
    find_function,
    format_f32,
    format_results,
)
from wasmtime_driver.engine import Interrupt, create_engine, create_store
from wasmtime_driver.errors import TaskError
from wasmtime_driver.settings import ConfigNumber

WAT = """
(module
  (func (export "id_i32") (param i32) (result i32) local.get 0)
  (func (export "id_i64") (param i64) (result i64) local.get 0)
  (func (export "id_f32") (param f32) (result f32) local.get 0)
  (func (export "id_f64") (param f64) (result f64) local.get 0)
  (func (export "pair") (param i32 i64) (result i64 i32) local.get 1 local.get 0)
  (func (export "three") (result i32 f32 f64)
    i32.const -7 f32.const 0.1 f64.const 2.5)
  (func (export "nothing"))
  (func (export "take_externref") (param externref))
  (func (export "take_funcref") (param i32 funcref))
  (func (export "give_funcref") (result funcref) ref.null func)
  (func (export "divide") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.div_s)
)
"""


class Module:
    def __init__(self) -> None:
        engine = create_engine()
        self.module = wasmtime.Module(engine, WAT)
        self.interrupt = Interrupt()
        self.store = create_store(engine, self.interrupt)
        instance = wasmtime.Instance(self.store, self.module, [])
        self.exports = instance.exports(self.store)

    def func_type(self, name: str) -> wasmtime.FuncType:
        return find_function(self.module, self.exports, name).type(self.store)

    def call(self, name: str, *args: ConfigNumber) -> str:
        func = find_function(self.module, self.exports, name)
        func_type, result = call_function(self.store, func, name, args, self.interrupt)
        return format_results(func_type, result)


@pytest.fixture(scope="module")
def wasm() -> Module:
    return Module()


@pytest.mark.parametrize(
    ("name", "value", "output"),
    [
        ("id_i32", -2147483648, "-2147483648\n"),
        ("id_i32", 2147483647, "2147483647\n"),
        ("id_i32", 4294967295, "-1\n"),
        ("id_i32", 2147483648, "-2147483648\n"),
        ("id_i32", "12", "12\n"),
        ("id_i32", 12.0, "12\n"),
        ("id_i32", "-5", "-5\n"),
        ("id_i64", -9223372036854775808, "-9223372036854775808\n"),
        ("id_i64", 9223372036854775807, "9223372036854775807\n"),
        ("id_i64", 18446744073709551615, "-1\n"),
        ("id_i64", "18446744073709551615", "-1\n"),
        ("id_f64", "0.1", "0.1\n"),
        ("id_f64", 7, "7.0\n"),
        ("id_f64", 1e308, "1e+308\n"),
        ("id_f32", "0.1", "0.1\n"),
        ("id_f32", 3.4028234663852886e38, "3.4028235e+38\n"),
        ("id_f32", -1, "-1.0\n"),
    ],
    ids=lambda value: repr(value),
)
def test_call_function_limits(
    wasm: Module, name: str, value: ConfigNumber, output: str
) -> None:
    assert wasm.call(name, value) == output


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("id_i32", -2147483649, r"-2147483649 does not fit in i32 "),
        ("id_i32", 4294967296, r"4294967296 does not fit in i32 "),
        ("id_i64", -9223372036854775809, "-9223372036854775809 does not fit in i64"),
        ("id_i64", 18446744073709551616, "18446744073709551616 does not fit in i64"),
        ("id_i64", "18446744073709551616", "'18446744073709551616' does not fit"),
        ("id_i32", 12.5, r"12\.5 is not an integer \(expected i32\)"),
        ("id_i32", "0.1", r"'0\.1' is not an integer \(expected i32\)"),
        ("id_i32", "twelve", r"'twelve' is not a number \(expected i32\)"),
        ("id_i64", math.nan, r"nan is not an integer \(expected i64\)"),
        ("id_f64", "x1", r"'x1' is not a number \(expected f64\)"),
        ("id_f32", 3.5e38, r"3\.5e\+38 does not fit in f32"),
        ("id_f32", True, r"True is not a number \(expected f32\)"),
        ("id_i32", False, r"False is not a number \(expected i32\)"),
    ],
    ids=lambda value: repr(value),
)
def test_convert_args_rejects(
    wasm: Module, name: str, value: ConfigNumber, message: str
) -> None:
    with pytest.raises(TaskError, match=f"function '{name}' argument 1: {message}"):
        convert_args(name, wasm.func_type(name), [value])


def test_convert_args_full_message(wasm: Module) -> None:
    expected = (
        "function 'pair' argument 1: 4294967296 does not fit in i32 "
        r"\(expected -2147483648\.\.4294967295\)"
    )
    with pytest.raises(TaskError, match=expected):
        convert_args("pair", wasm.func_type("pair"), [4294967296, 1])


def test_convert_args_names_position(wasm: Module) -> None:
    with pytest.raises(TaskError, match="function 'pair' argument 2: 1.5 is not"):
        convert_args("pair", wasm.func_type("pair"), [1, 1.5])


@pytest.mark.parametrize("args", [[], [1], [1, 2, 3]], ids=["none", "one", "three"])
def test_convert_args_arity(wasm: Module, args: list[ConfigNumber]) -> None:
    message = (
        rf"function 'pair' takes 2 argument\(s\) \(i32, i64\) "
        rf"but {len(args)} were given"
    )
    with pytest.raises(TaskError, match=message):
        convert_args("pair", wasm.func_type("pair"), args)


@pytest.mark.parametrize(
    ("name", "args", "position", "type_name"),
    [
        ("take_externref", [1], 1, "externref"),
        ("take_funcref", [1, 2], 2, "funcref"),
    ],
    ids=["externref", "funcref"],
)
def test_convert_args_reference_params(
    wasm: Module, name: str, args: list[ConfigNumber], position: int, type_name: str
) -> None:
    message = (
        f"function '{name}' argument {position}: parameters of type "
        f"{type_name} cannot be passed"
    )
    with pytest.raises(TaskError, match=message):
        convert_args(name, wasm.func_type(name), args)


def test_create_engine_rejects_v128_params() -> None:
    # v128 signatures cannot reach convert_args: the engine refuses to compile
    # them, because reading such a signature aborts wasmtime-py 50.
    wat = '(module (func (export "f") (param v128)))'
    with pytest.raises(wasmtime.WasmtimeError, match="SIMD support is not enabled"):
        wasmtime.Module(create_engine(), wat)


def test_format_results_several(wasm: Module) -> None:
    assert wasm.call("pair", 4294967295, 5) == "5 -1\n"
    assert wasm.call("three") == "-7 0.1 2.5\n"


def test_format_results_nothing(wasm: Module) -> None:
    assert wasm.call("nothing") == ""


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"),
        (1 / 3, "0.33333334"),
        (16777217.0, "16777216.0"),
        (-0.0, "-0.0"),
        (1e-45, "1e-45"),
        (3.4028234663852886e38, "3.4028235e+38"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (math.nan, "nan"),
    ],
    ids=repr,
)
def test_format_f32_shortest(value: float, text: str) -> None:
    as_f32 = struct.unpack("<f", struct.pack("<f", value))[0]
    assert format_f32(as_f32) == text


def test_format_f32_round_trips() -> None:
    for bits in range(0x3F800000, 0x3F800000 + 5000, 7):
        value = struct.unpack("<f", struct.pack("<I", bits))[0]
        text = format_f32(value)
        assert struct.unpack("<f", struct.pack("<f", float(text)))[0] == value


def test_find_function_lists_exports(wasm: Module) -> None:
    with pytest.raises(
        TaskError, match="'missing' is not exported.*'id_i32', 'id_i64'"
    ):
        find_function(wasm.module, wasm.exports, "missing")


def test_call_function_trap(wasm: Module) -> None:
    with pytest.raises(
        TaskError, match="function 'divide' trapped: wasm trap: integer divide by zero"
    ):
        wasm.call("divide", 1, 0)
