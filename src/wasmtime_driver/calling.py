"""Typed calls: job numbers to wasm values by signature, and results to text."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

import wasmtime

from .engine import Interrupt, TaskInterrupted
from .errors import TaskError
from .settings import ConfigNumber

# Signed minimum and unsigned maximum: a job may write an integer parameter
# either way, and the unsigned form is passed as its two's-complement bits.
_INTEGER_BITS = {"i32": 32, "i64": 64}
_FLOAT_TYPES = ("f32", "f64")
_F32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]

WasmValue = int | float


def exported_functions(module: wasmtime.Module) -> list[str]:
    """Return the names of the functions `module` exports, in export order."""
    return [
        export.name
        for export in module.exports
        if isinstance(export.type, wasmtime.FuncType)
    ]


def find_function(
    module: wasmtime.Module, exports: Mapping[str, object], name: str
) -> wasmtime.Func:
    """Return the exported function `name`, or raise `TaskError` listing the others."""
    func = exports.get(name)
    if isinstance(func, wasmtime.Func):
        return func
    available = ", ".join(repr(n) for n in exported_functions(module)) or "none"
    problem = "is not a function" if func is not None else "is not exported"
    raise TaskError(
        f"function {name!r} {problem} by the module; "
        f"its exported functions are: {available}"
    )


def call_function(
    store: wasmtime.Store,
    func: wasmtime.Func,
    name: str,
    args: Sequence[ConfigNumber],
    interrupt: Interrupt,
) -> tuple[wasmtime.FuncType, object]:
    """Call `func` with `args` converted to its parameter types.

    Returns its type and its raw result. A trap becomes `TaskError`, or
    `TaskInterrupted` once `interrupt` was requested; `wasmtime.ExitTrap`
    from WASI `proc_exit` propagates unchanged.
    """
    func_type = func.type(store)
    values = convert_args(name, func_type, args)
    try:
        result = func(store, *values)
    except wasmtime.ExitTrap:
        raise
    except (wasmtime.Trap, wasmtime.WasmtimeError) as err:
        if interrupt.requested:
            raise TaskInterrupted() from None
        raise TaskError(f"function {name!r} trapped: {trap_reason(err)}") from None
    return func_type, result


def trap_reason(err: Exception) -> str:
    """Return the cause of a wasmtime trap without its backtrace."""
    text = str(err)
    _, separator, cause = text.partition("Caused by:")
    lines = [line.strip() for line in (cause if separator else text).splitlines()]
    return "; ".join(line for line in lines if line) or "unknown trap"


def value_type_name(value_type: wasmtime.ValType) -> str:
    """Return the wasm text name of a value type (wasmtime-py prints externref as "anyref")."""
    name = str(value_type)
    return "externref" if name == "anyref" else name


def check_printable_results(func_name: str, func_type: wasmtime.FuncType) -> None:
    """Raise `TaskError` when a result type has no decimal text form."""
    for value_type in func_type.results:
        name = value_type_name(value_type)
        if name not in _INTEGER_BITS and name not in _FLOAT_TYPES:
            raise TaskError(
                f"function {func_name!r} returns {name}, which this driver cannot "
                "print; call a function whose results are i32, i64, f32 or f64"
            )


def convert_args(
    func_name: str, func_type: wasmtime.FuncType, args: Sequence[ConfigNumber]
) -> list[WasmValue]:
    """Convert job numbers to the parameter types of `func_name`, checking ranges."""
    params = func_type.params
    if len(args) != len(params):
        expected = ", ".join(value_type_name(p) for p in params) or "none"
        raise TaskError(
            f"function {func_name!r} takes {len(params)} argument(s) ({expected}) "
            f"but {len(args)} were given"
        )
    return [
        _convert_arg(func_name, position, value, value_type_name(value_type))
        for position, (value, value_type) in enumerate(zip(args, params), start=1)
    ]


def _convert_arg(
    func_name: str, position: int, value: ConfigNumber, type_name: str
) -> WasmValue:
    where = f"function {func_name!r} argument {position}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TaskError(f"{where}: {value!r} is not a number (expected {type_name})")
    if type_name in _INTEGER_BITS:
        return _to_integer(where, value, _INTEGER_BITS[type_name])
    if type_name in _FLOAT_TYPES:
        return _to_float(where, value, type_name)
    raise TaskError(
        f"{where}: parameters of type {type_name} cannot be passed from a job; "
        "only i32, i64, f32 and f64 are supported"
    )


def _to_integer(where: str, value: float | str, bits: int) -> int:
    type_name = f"i{bits}"
    number = _parse_decimal(where, value, type_name)
    if not number.is_finite() or number != number.to_integral_value():
        raise TaskError(f"{where}: {value!r} is not an integer (expected {type_name})")
    integer = int(number)
    low, high = -(1 << (bits - 1)), (1 << bits) - 1
    if not low <= integer <= high:
        raise TaskError(
            f"{where}: {value!r} does not fit in {type_name} (expected {low}..{high})"
        )
    # Unsigned values above the signed maximum become their two's-complement
    # bit pattern, which is how wasm itself reads them.
    if integer >= 1 << (bits - 1):
        integer -= 1 << bits
    return integer


def _to_float(where: str, value: float | str, type_name: str) -> float:
    if isinstance(value, str):
        number = _parse_decimal(where, value, type_name)
        result = float(number)
    else:
        result = float(value)
    if type_name == "f32" and math.isfinite(result) and abs(result) > _F32_MAX:
        # A finite number past the f32 range would silently become infinity.
        raise TaskError(
            f"{where}: {value!r} does not fit in f32 "
            f"(expected a magnitude of at most {_F32_MAX!r})"
        )
    return result


def _parse_decimal(where: str, value: float | str, type_name: str) -> Decimal:
    # Decimal keeps integers and decimal strings of any length exact, so the
    # range check sees the job's value and not a float64 rounding of it.
    try:
        return Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise TaskError(
            f"{where}: {value!r} is not a number (expected {type_name})"
        ) from None


def format_results(func_type: wasmtime.FuncType, result: object) -> str:
    """Format a call's results as decimal text with a newline, or "" for none."""
    result_types = [value_type_name(t) for t in func_type.results]
    if not result_types:
        return ""
    values = result if isinstance(result, list) else [result]
    texts = [
        format_value(type_name, value)
        for type_name, value in zip(result_types, values, strict=True)
    ]
    return " ".join(texts) + "\n"


def format_value(type_name: str, value: object) -> str:
    """Format one result value; floats use the shortest text of their width."""
    if type_name in _INTEGER_BITS and isinstance(value, int):
        return str(value)
    if type_name == "f64" and isinstance(value, float):
        return repr(value)
    if type_name == "f32" and isinstance(value, float):
        return format_f32(value)
    raise TaskError(f"cannot format result {value!r} of type {type_name}")


def format_f32(value: float) -> str:
    """Return the shortest decimal text that reads back as the same f32.

    Python has no f32 type, so this tries increasing precision until the text
    rounds to the same 32-bit pattern; repr then gives it Python's float
    spelling ("0.1", "1e+20", "nan", "inf").
    """
    if not math.isfinite(value):
        return repr(value)
    bits = struct.pack("<f", value)
    for precision in range(1, 10):
        candidate = float(f"{value:.{precision}g}")
        try:
            if struct.pack("<f", candidate) == bits:
                return repr(candidate)
        except OverflowError:
            # Rounding a value near the f32 maximum up can leave the f32 range.
            continue
    # Nine significant digits always identify an f32, so this is unreachable.
    return repr(value)
