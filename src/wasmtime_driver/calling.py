"""Typed calls: job numbers to wasm values by signature, and results to text."""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

import wasmtime

from .display import quote, show_number, show_value
from .engine import Interrupt, TaskInterrupted
from .errors import ModuleError, TaskError
from .settings import ConfigNumber
from .wasmbinary import FuncSignature

# Signed minimum and unsigned maximum: a job may write an integer parameter
# either way, and the unsigned form is passed as its two's-complement bits.
_INTEGER_BITS = {"i32": 32, "i64": 64}
_FLOAT_TYPES = ("f32", "f64")
_NUMBER_TYPES = (*_INTEGER_BITS, *_FLOAT_TYPES)
# Result types that wasmtime-py 50 converts to Python values without aborting.
_READABLE_RESULT_TYPES = (*_NUMBER_TYPES, "funcref", "externref")
# Smallest nonzero and largest finite magnitudes of each float type.
_FLOAT_RANGES = {
    "f32": (
        struct.unpack("<f", b"\x01\x00\x00\x00")[0],
        struct.unpack("<f", b"\xff\xff\x7f\x7f")[0],
    ),
    "f64": (5e-324, sys.float_info.max),
}
# Exported names listed in an error message, at most.
_MAX_LISTED_NAMES = 20

WasmValue = int | float


def exported_functions(signatures: Mapping[str, FuncSignature]) -> list[str]:
    """Return the names of the exported functions, in export order.

    The names come from the scanned signatures, so wasmtime's type API is
    never called.
    """
    return list(signatures)


def find_function(
    signatures: Mapping[str, FuncSignature],
    exports: Mapping[str, object],
    name: str,
) -> tuple[wasmtime.Func, FuncSignature]:
    """Return the exported function `name` and its signature.

    Raises `TaskError` listing the exported functions when `name` is missing
    or not a function.
    """
    func = exports.get(name)
    if not isinstance(func, wasmtime.Func):
        available = list_names(exported_functions(signatures))
        if func is None:
            problem = f"function {quote(name)} is not exported by the module"
        else:
            problem = f"export {quote(name)} is a {extern_kind(func)}, not a function"
        raise TaskError(f"{problem}; exported functions: {available}")
    signature = signatures.get(name)
    if signature is None:
        raise ModuleError(
            f"function {quote(name)} is exported by the compiled module but not by the "
            "module file; the file changed after it was compiled, so start the "
            "task again"
        )
    return func, signature


def extern_kind(extern: object) -> str:
    """Return the wasm name of an export's kind: function, memory, global, table."""
    kinds = {
        wasmtime.Func: "function",
        wasmtime.FuncType: "function",
        wasmtime.Memory: "memory",
        wasmtime.MemoryType: "memory",
        wasmtime.SharedMemory: "shared memory",
        wasmtime.Global: "global",
        wasmtime.GlobalType: "global",
        wasmtime.Table: "table",
        wasmtime.TableType: "table",
    }
    return kinds.get(type(extern), type(extern).__name__)


def list_names(names: Sequence[str]) -> str:
    """Return quoted names separated by commas, at most `_MAX_LISTED_NAMES` of them."""
    if not names:
        return "none"
    shown = ", ".join(quote(name) for name in names[:_MAX_LISTED_NAMES])
    if len(names) > _MAX_LISTED_NAMES:
        shown += f" and {len(names) - _MAX_LISTED_NAMES} more"
    return shown


def signatures_from_module(module: wasmtime.Module) -> dict[str, FuncSignature]:
    """Read exported function signatures through wasmtime's type API.

    NOTE: wasmtime-py 50 aborts the process when this reads a v128 or a typed
    reference. Use it only for modules without such signatures, and prefer
    reading the signatures from the module file with `read_function_exports`.
    """
    signatures: dict[str, FuncSignature] = {}
    for export in module.exports:
        func_type = export.type
        if isinstance(func_type, wasmtime.FuncType):
            params = tuple(value_type_name(t) for t in func_type.params)
            results = tuple(value_type_name(t) for t in func_type.results)
            signatures[export.name] = FuncSignature(params, results)
    return signatures


def call_function(
    store: wasmtime.Store,
    func: wasmtime.Func,
    name: str,
    signature: FuncSignature,
    args: Sequence[ConfigNumber],
    interrupt: Interrupt,
) -> object:
    """Call `func`, whose scanned signature is `signature`, with `args`.

    The signature is checked before wasmtime receives the call, because
    `wasmtime.Func.__call__` reads the function's type and wasmtime-py 50
    aborts the process on a v128 there. Returns the raw result. A trap becomes
    `TaskError`, or `TaskInterrupted` once `interrupt` was requested;
    `wasmtime.ExitTrap` from WASI `proc_exit` propagates unchanged.
    """
    values = convert_args(name, signature, args)
    check_readable_results(name, signature)
    try:
        return func(store, *values)
    except wasmtime.ExitTrap:
        raise
    except (wasmtime.Trap, wasmtime.WasmtimeError) as err:
        if interrupt.requested:
            raise TaskInterrupted() from None
        raise TaskError(f"function {quote(name)} trapped: {trap_reason(err)}") from None


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


def check_readable_results(func_name: str, signature: FuncSignature) -> None:
    """Raise `TaskError` for a result type that wasmtime-py cannot return."""
    _check_result_types(func_name, signature, _READABLE_RESULT_TYPES)


def check_printable_results(func_name: str, signature: FuncSignature) -> None:
    """Raise `TaskError` when a result type has no decimal text form."""
    _check_result_types(func_name, signature, _NUMBER_TYPES)


def _check_result_types(
    func_name: str, signature: FuncSignature, allowed: tuple[str, ...]
) -> None:
    for position, type_name in enumerate(signature.results, start=1):
        if type_name not in allowed:
            raise TaskError(
                f"function {quote(func_name)} result {position} has type {type_name}, "
                "which the driver cannot print; call a function whose results "
                "are i32, i64, f32 or f64"
            )


def convert_args(
    func_name: str, signature: FuncSignature, args: Sequence[ConfigNumber]
) -> list[WasmValue]:
    """Convert job numbers to the parameter types of `func_name`, checking ranges."""
    _check_param_types(func_name, signature, args)
    params = signature.params
    if len(args) != len(params):
        raise TaskError(
            f"function {quote(func_name)} takes {_count(len(params), 'argument')}"
            f"{_param_list(params)} but {len(args)} "
            f"{'was' if len(args) == 1 else 'were'} given"
        )
    return [
        _convert_arg(func_name, position, value, type_name)
        for position, (value, type_name) in enumerate(zip(args, params), start=1)
    ]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _param_list(params: Sequence[str]) -> str:
    return f" ({', '.join(params)})" if params else ""


def _check_param_types(
    func_name: str, signature: FuncSignature, args: Sequence[ConfigNumber]
) -> None:
    for position, type_name in enumerate(signature.params, start=1):
        if type_name in _NUMBER_TYPES:
            continue
        given = ""
        if position <= len(args):
            given = f" (value {_show_arg(args[position - 1])})"
        raise TaskError(
            f"function {quote(func_name)} argument {position}{given} has type "
            f"{type_name}, which a job cannot pass; only i32, i64, f32 and f64 "
            "arguments are supported"
        )


def _show_arg(value: object) -> str:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return show_number(value)
    return show_value(value)


def _convert_arg(
    func_name: str, position: int, value: ConfigNumber, type_name: str
) -> WasmValue:
    where = f"function {quote(func_name)} argument {position}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TaskError(
            f"{where}: {_show_arg(value)} is not a number (expected {type_name})"
        )
    if type_name in _INTEGER_BITS:
        return _to_integer(where, value, _INTEGER_BITS[type_name])
    return _to_float(where, value, type_name)


def _to_integer(where: str, value: float | str, bits: int) -> int:
    type_name = f"i{bits}"
    shown = show_number(value)
    number = _parse_decimal(where, value, type_name)
    if not number.is_finite() or number != number.to_integral_value():
        raise TaskError(f"{where}: {shown} is not an integer (expected {type_name})")
    low, high = -(1 << (bits - 1)), (1 << bits) - 1
    # The exponent check comes first so that int() never builds a huge int.
    if number.adjusted() > 20 or not low <= int(number) <= high:
        raise TaskError(
            f"{where}: {shown} does not fit in {type_name} (expected {low}..{high})"
        )
    integer = int(number)
    # Unsigned values above the signed maximum become their two's-complement
    # bit pattern, which is how wasm itself reads them.
    if integer >= 1 << (bits - 1):
        integer -= 1 << bits
    return integer


def _to_float(where: str, value: float | str, type_name: str) -> float:
    """Round `value` to the nearest `type_name` value, rejecting what does not fit.

    Overflow to infinity and underflow of a nonzero value to zero are errors;
    every other value is rounded to the nearest representable value, ties to
    even. Job values are finite, so NaN and infinities are rejected too.
    """
    number = _parse_decimal(where, value, type_name)
    # Decimal's float() parses its text, which is correctly rounded and cheap
    # even for an exponent of 1e9, where float(int) would raise.
    result = float(number) if number.is_finite() else math.nan
    if type_name == "f32" and math.isfinite(result):
        result = _round_to_f32(result)
    if not math.isfinite(result) or (result == 0 and number != 0):
        smallest, largest = _FLOAT_RANGES[type_name]
        limits = f"{_format_float(type_name, smallest)} to "
        limits += _format_float(type_name, largest)
        raise TaskError(
            f"{where}: {show_number(value)} does not fit in {type_name} "
            f"(expected 0 or a magnitude from {limits} after rounding to the "
            f"nearest {type_name})"
        )
    return result


def _round_to_f32(value: float) -> float:
    # NOTE: the decimal text is rounded to f64 first and then to f32. Such
    # double rounding can differ from correct rounding by one f32 step for
    # rare values that lie almost exactly halfway between two f32 values.
    try:
        rounded: float = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        # struct raises when the value rounds past the f32 maximum.
        return math.inf
    return rounded


def _format_float(type_name: str, value: float) -> str:
    return format_f32(value) if type_name == "f32" else repr(value)


def _parse_decimal(where: str, value: float | str, type_name: str) -> Decimal:
    # Decimal keeps integers and decimal strings of any length exact, so the
    # range check sees the job's value and not a float64 rounding of it.
    try:
        return Decimal(value)
    except InvalidOperation:
        raise TaskError(
            f"{where}: {show_number(value)} is not a number (expected {type_name})"
        ) from None


def format_results(signature: FuncSignature, result: object) -> str:
    """Format a call's results as decimal text with a newline, or "" for none."""
    result_types = signature.results
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
    raise TaskError(f"cannot format result {show_value(value)} of type {type_name}")


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
