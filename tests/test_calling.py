from __future__ import annotations

import io
import math
import re
import struct

import pytest
import wasmtime

from wasmtime_driver.calling import (
    call_function,
    check_printable_results,
    convert_args,
    exported_functions,
    find_function,
    format_f32,
    format_results,
    signatures_from_module,
)
from wasmtime_driver.engine import Interrupt, create_engine, create_store
from wasmtime_driver.errors import TaskError
from wasmtime_driver.settings import ConfigNumber
from wasmtime_driver.wasmbinary import FuncSignature, parse_function_exports

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
  (func (export "take_v128") (param i32 v128) (result i32) local.get 0)
  (func (export "give_v128") (result v128) v128.const i64x2 0 0)
  (memory (export "memory") 1)
)
"""


class Module:
    def __init__(self) -> None:
        engine = create_engine()
        binary = bytes(wasmtime.wat2wasm(WAT))
        self.signatures = parse_function_exports(io.BytesIO(binary), "calling.wasm")
        self.module = wasmtime.Module(engine, binary)
        self.interrupt = Interrupt()
        self.store = create_store(engine, self.interrupt)
        instance = wasmtime.Instance(self.store, self.module, [])
        self.exports = instance.exports(self.store)

    def func_type(self, name: str) -> FuncSignature:
        return self.signatures[name]

    def call(self, name: str, *args: ConfigNumber) -> str:
        func, signature = find_function(self.signatures, self.exports, name)
        result = call_function(self.store, func, name, signature, args, self.interrupt)
        return format_results(signature, result)


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
        ("id_i64", "18446744073709551616", "18446744073709551616 does not fit"),
        ("id_i32", 12.5, r"12\.5 is not an integer \(expected i32\)"),
        ("id_i32", "0.1", r"0\.1 is not an integer \(expected i32\)"),
        ("id_i32", "twelve", r'"twelve" is not a number \(expected i32\)'),
        ("id_i64", math.nan, r"NaN is not an integer \(expected i64\)"),
        ("id_f64", "x1", r'"x1" is not a number \(expected f64\)'),
        ("id_f32", 3.5e38, r"3\.5e\+38 does not fit in f32"),
        ("id_f32", True, r"true is not a number \(expected f32\)"),
        ("id_i32", False, r"false is not a number \(expected i32\)"),
    ],
    ids=lambda value: repr(value),
)
def test_convert_args_rejects(
    wasm: Module, name: str, value: ConfigNumber, message: str
) -> None:
    with pytest.raises(TaskError, match=f'function "{name}" argument 1: {message}'):
        convert_args(name, wasm.func_type(name), [value])


def test_convert_args_full_message(wasm: Module) -> None:
    expected = (
        'function "pair" argument 1: 4294967296 does not fit in i32 '
        r"\(expected -2147483648\.\.4294967295\)"
    )
    with pytest.raises(TaskError, match=expected):
        convert_args("pair", wasm.func_type("pair"), [4294967296, 1])


def test_convert_args_names_position(wasm: Module) -> None:
    with pytest.raises(TaskError, match='function "pair" argument 2: 1.5 is not'):
        convert_args("pair", wasm.func_type("pair"), [1, 1.5])


@pytest.mark.parametrize("args", [[], [1], [1, 2, 3]], ids=["none", "one", "three"])
def test_convert_args_arity(wasm: Module, args: list[ConfigNumber]) -> None:
    message = (
        rf"function \"pair\" takes 2 arguments \(i32, i64\) "
        rf"but {len(args)} {'was' if len(args) == 1 else 'were'} given$"
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
        f'function "{name}" argument {position} (value {args[-1]}) has type '
        f"{type_name}, which a job cannot pass; only i32, i64, f32 and f64 "
        "arguments are supported"
    )
    with pytest.raises(TaskError, match=re.escape(message)):
        convert_args(name, wasm.func_type(name), args)


def test_call_function_v128_param(wasm: Module) -> None:
    # Reaching wasmtime-py's type API with a v128 would abort this process.
    message = 'function "take_v128" argument 2 (value 7) has type v128'
    with pytest.raises(TaskError, match=re.escape(message)):
        wasm.call("take_v128", 1, "7")
    assert wasm.call("id_i32", 5) == "5\n"


def test_call_function_v128_result(wasm: Module) -> None:
    message = (
        'function "give_v128" result 1 has type v128, which the driver cannot print'
    )
    with pytest.raises(TaskError, match=re.escape(message)):
        wasm.call("give_v128")
    assert wasm.call("id_i32", 6) == "6\n"


def test_check_printable_results_references(wasm: Module) -> None:
    with pytest.raises(TaskError, match='"give_funcref" result 1 has type funcref'):
        check_printable_results("give_funcref", wasm.func_type("give_funcref"))


def test_exported_functions_skips_memory(wasm: Module) -> None:
    names = exported_functions(wasm.signatures)
    assert names[0] == "id_i32"
    assert names[-1] == "give_v128"
    assert "memory" not in names


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
        TaskError,
        match='function "missing" is not exported.*: "id_i32", "id_i64"',
    ):
        find_function(wasm.signatures, wasm.exports, "missing")


def test_find_function_not_a_function(wasm: Module) -> None:
    message = (
        'export "memory" is a memory, not a function; exported functions: "id_i32"'
    )
    with pytest.raises(TaskError, match=message):
        find_function(wasm.signatures, wasm.exports, "memory")


def test_signatures_from_module_matches_scan(wasm: Module) -> None:
    # wasmtime-py aborts on v128 signatures, so compare the other functions.
    wat = "\n".join(line for line in WAT.splitlines() if "v128" not in line)
    binary = bytes(wasmtime.wat2wasm(wat))
    scanned = parse_function_exports(io.BytesIO(binary), "no-simd.wasm")
    from_wasmtime = signatures_from_module(wasmtime.Module(create_engine(), binary))
    assert from_wasmtime == scanned


def test_call_function_trap(wasm: Module) -> None:
    with pytest.raises(
        TaskError, match='function "divide" trapped: wasm trap: integer divide by zero'
    ):
        wasm.call("divide", 1, 0)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("id_f64", "1e309", "1e309"),
        ("id_f64", 10**309, "1e+309"),
        ("id_f64", "1e-400", "1e-400"),
        ("id_f64", "1e999999999", "1e999999999"),
        ("id_f32", "1e39", "1e39"),
        ("id_f32", 10**39, "1e+39"),
        ("id_f32", "1e-50", "1e-50"),
        ("id_f32", "-1e-46", "-1e-46"),
    ],
    ids=repr,
)
def test_convert_args_float_out_of_range(
    wasm: Module, name: str, value: ConfigNumber, shown: str
) -> None:
    type_name = name[-3:]
    message = (
        f'function "{name}" argument 1: {re.escape(shown)} does not fit in '
        rf"{type_name} \(expected 0 or a magnitude from .* to .* after rounding "
        f"to the nearest {type_name}\\)$"
    )
    with pytest.raises(TaskError, match=message):
        convert_args(name, wasm.func_type(name), [value])


@pytest.mark.parametrize(
    ("name", "value", "output"),
    [
        ("id_f32", "3.4028235e38", "3.4028235e+38\n"),
        ("id_f32", "1e-45", "1e-45\n"),
        ("id_f32", "8e-46", "1e-45\n"),
        ("id_f32", "-0", "-0.0\n"),
        ("id_f64", "2.5e-324", "5e-324\n"),
        ("id_f64", "1.7976931348623158e308", "1.7976931348623157e+308\n"),
    ],
    ids=repr,
)
def test_call_function_float_rounds_to_nearest(
    wasm: Module, name: str, value: ConfigNumber, output: str
) -> None:
    assert wasm.call(name, value) == output


@pytest.mark.parametrize("name", ["id_i32", "id_i64"])
def test_convert_args_huge_integer_text(wasm: Module, name: str) -> None:
    message = f'function "{name}" argument 1: 1e999999999 does not fit in i'
    with pytest.raises(TaskError, match=message):
        convert_args(name, wasm.func_type(name), ["1e999999999"])


def test_convert_args_huge_int_shown_compactly(wasm: Module) -> None:
    message = r'function "id_i64" argument 1: 1e\+400 does not fit in i64'
    with pytest.raises(TaskError, match=message):
        convert_args("id_i64", wasm.func_type("id_i64"), [10**400])


def test_convert_args_arity_one(wasm: Module) -> None:
    message = r'function "id_i32" takes 1 argument \(i32\) but 2 were given$'
    with pytest.raises(TaskError, match=message):
        convert_args("id_i32", wasm.func_type("id_i32"), [1, 2])
    message = r'function "nothing" takes 0 arguments but 1 was given$'
    with pytest.raises(TaskError, match=message):
        convert_args("nothing", wasm.func_type("nothing"), [1])
