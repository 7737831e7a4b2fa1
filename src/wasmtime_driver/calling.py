"""Typed calls: job numbers to wasm values by signature, and results to text."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

import wasmtime

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
_F32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]

WasmValue = int | float


def exported_functions(signatures: Mapping[str, FuncSignature]) -> list[str]:
    """Return the names of the exported functions, in export order.

    It reads the names from the scanned signatures and never asks wasmtime for
    a type.
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
        available = ", ".join(repr(n) for n in exported_functions(signatures))
        problem = "is not a function" if func is not None else "is not exported"
        raise TaskError(
            f"function {name!r} {problem} by the module; "
            f"its exported functions are: {available or 'none'}"
        )
    signature = signatures.get(name)
    if signature is None:
        raise ModuleError(
            f"function {name!r} is exported by the compiled module but not by the "
            "module file; the file changed after it was compiled, so start the "
            "task again"
        )
    return func, signature


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

    The signature is checked before wasmtime sees the call, because
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
        raise TaskError(f"function {name!r} trapped: {trap_reason(err)}") from None


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
                f"function {func_name!r} result {position} has type {type_name}, "
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
            f"function {func_name!r} takes {len(params)} argument(s) "
            f"({', '.join(params) or 'none'}) but {len(args)} were given"
        )
    return [
        _convert_arg(func_name, position, value, type_name)
        for position, (value, type_name) in enumerate(zip(args, params), start=1)
    ]


def _check_param_types(
    func_name: str, signature: FuncSignature, args: Sequence[ConfigNumber]
) -> None:
    for position, type_name in enumerate(signature.params, start=1):
        if type_name in _NUMBER_TYPES:
            continue
        given = f" (value {args[position - 1]!r})" if position <= len(args) else ""
        raise TaskError(
            f"function {func_name!r} argument {position}{given} has type "
            f"{type_name}, which a job cannot pass; only i32, i64, f32 and f64 "
            "arguments are supported"
        )


def _convert_arg(
    func_name: str, position: int, value: ConfigNumber, type_name: str
) -> WasmValue:
    where = f"function {func_name!r} argument {position}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TaskError(f"{where}: {value!r} is not a number (expected {type_name})")
    if type_name in _INTEGER_BITS:
        return _to_integer(where, value, _INTEGER_BITS[type_name])
    return _to_float(where, value, type_name)


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
