"""cty values, their plain Python form and their conversion to a declared type.

A `Value` carries its concrete cty type and its data. Numbers are
`decimal.Decimal` throughout, so no value passes through a float. The
constructors (`string_value`, `make_set` and the others) store strings in NFC
and order sets as go-cty does. `to_python` turns a `Value` into plain Python
data (numbers become `int` when integral, else `decimal.Decimal`) and
`from_python` does the reverse. `convert` converts a value to a declared type
as go-cty's ``convert.Convert`` does and raises `ConversionError` with
go-cty's message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

from wasmtime_driver.ctytypes import (
    BOOL,
    DYNAMIC,
    NUMBER,
    STRING,
    ListType,
    MapType,
    ObjectType,
    PrimitiveType,
    SetType,
    TupleType,
    Type,
    friendly_name,
)

# ---------------------------------------------------------------------------
# cty values

Data: TypeAlias = (
    None | str | bool | Decimal | tuple["Value", ...] | Mapping[str, "Value"]
)


@dataclass(frozen=True)
class Value:
    """A cty value: its concrete `type` and its `data`.

    `data` is None for null, `str` for strings (NFC), `bool`, `Decimal` for
    numbers, a tuple of values for lists, tuples and sets (sets in go-cty's
    order), and a mapping of name to value for maps and objects.
    """

    type: Type
    data: Data

    @property
    def is_null(self) -> bool:
        return self.data is None

    def elements(self) -> tuple[Value, ...]:
        assert isinstance(self.data, tuple)
        return self.data

    def items(self) -> Mapping[str, Value]:
        assert isinstance(self.data, Mapping)
        return self.data


def null(ty: Type) -> Value:
    return Value(ty, None)


def string_value(text: str) -> Value:
    """Return a string value; go-cty stores every string in Unicode NFC."""
    return Value(STRING, unicodedata.normalize("NFC", text))


def number_value(number: Decimal | float) -> Value:
    """Return a number value; a float is read as its shortest decimal text."""
    if isinstance(number, float):
        # Go's JSON encoder writes a float64 as its shortest round-trip text,
        # which is what HCL's JSON parser then reads.
        number = Decimal(repr(number))
    return Value(NUMBER, Decimal(number))


def bool_value(flag: bool) -> Value:
    return Value(BOOL, flag)


def make_tuple(elements: Sequence[Value]) -> Value:
    return Value(TupleType(tuple(e.type for e in elements)), tuple(elements))


def make_object(attributes: Mapping[str, Value]) -> Value:
    data = {_nfc(name): value for name, value in attributes.items()}
    ty = ObjectType.of({name: value.type for name, value in data.items()})
    return Value(ty, data)


def make_list(elements: Sequence[Value], element_type: Type) -> Value:
    return Value(ListType(element_type), tuple(elements))


def make_map(elements: Mapping[str, Value], element_type: Type) -> Value:
    data = {_nfc(key): value for key, value in elements.items()}
    return Value(MapType(element_type), dict(sorted(data.items())))


def make_set(elements: Iterable[Value], element_type: Type) -> Value:
    """Return a set value, without duplicates and in go-cty's element order.

    go-cty orders strings lexically, numbers ascending, false before true and
    nulls last.
    """
    unique: dict[Any, Value] = {}
    for element in elements:
        unique.setdefault(_set_member_key(element), element)
    # NOTE: go-cty orders sets of other element types by an internal hash, so
    # the order chosen here for them (by their plain data) can differ.
    ordered = sorted(unique.values(), key=_set_order_key)
    return Value(SetType(element_type), tuple(ordered))


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _set_member_key(value: Value) -> Any:
    return (value.type, _canonical(value))


def _canonical(value: Value) -> Any:
    # A hashable form in which equal cty values are equal: 1.50 and 1.5 are
    # the same number.
    data = value.data
    if isinstance(data, Decimal):
        return data.as_integer_ratio()
    if isinstance(data, tuple):
        return tuple(_canonical(element) for element in data)
    if isinstance(data, Mapping):
        return tuple(sorted((key, _canonical(v)) for key, v in data.items()))
    return data


def _set_order_key(value: Value) -> tuple[int, Any]:
    if value.is_null:
        return (2, "")
    if isinstance(value.data, (str, bool, Decimal)):
        return (0, value.data)
    return (1, repr(_canonical(value)))


def to_python(value: Value) -> Any:
    """Return `value` as plain Python data.

    null is None; lists, tuples and sets become lists; maps and objects
    become dicts; integral numbers become `int`, others `decimal.Decimal`.
    """
    data = value.data
    if isinstance(data, Decimal):
        numerator, denominator = data.as_integer_ratio()
        return numerator if denominator == 1 else data
    if isinstance(data, tuple):
        return [to_python(element) for element in data]
    if isinstance(data, Mapping):
        return {key: to_python(element) for key, element in data.items()}
    return data


def from_python(data: Any) -> Value:
    """Return the cty value that HCL's JSON syntax gives for `data`, without templates.

    Lists become tuples and dicts objects, as in a JSON config.
    """
    if data is None:
        return null(DYNAMIC)
    if isinstance(data, bool):
        return bool_value(data)
    if isinstance(data, (int, float, Decimal)):
        return number_value(data)
    if isinstance(data, str):
        return string_value(data)
    if isinstance(data, Mapping):
        return make_object({str(k): from_python(v) for k, v in data.items()})
    if isinstance(data, (list, tuple)):
        return make_tuple([from_python(element) for element in data])
    raise TypeError(f"cannot convert {type(data).__name__} {data!r} to a cty value")


def number_text(number: Decimal) -> str:
    """Format `number` as go-cty does (``big.Float.Text('f', -1)``): no exponent."""
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# ---------------------------------------------------------------------------
# Conversion to a declared type (go-cty's convert.Convert)


class ConversionError(ValueError):
    """A value cannot be converted to the declared type; the text is go-cty's."""


_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def convert(value: Value, target: Type) -> Value:
    """Convert `value` to `target` as go-cty's ``convert.Convert`` does.

    Raises `ConversionError` naming the failing element path.
    """
    if target == DYNAMIC or value.type == target:
        return value
    if value.is_null:
        return null(target)
    if isinstance(target, PrimitiveType):
        return _convert_primitive(value, target)
    if isinstance(target, (ListType, SetType)):
        return _convert_sequence(value, target)
    if isinstance(target, MapType):
        return _convert_map(value, target)
    if isinstance(target, ObjectType):
        return _convert_object(value, target)
    return _convert_tuple(value, target)


def _convert_primitive(value: Value, target: PrimitiveType) -> Value:
    data = value.data
    if target == STRING and isinstance(data, bool):
        return string_value("true" if data else "false")
    if target == STRING and isinstance(data, Decimal):
        return string_value(number_text(data))
    if target == NUMBER and value.type == STRING:
        assert isinstance(data, str)
        if not _NUMBER_TEXT.fullmatch(data):
            raise ConversionError("a number is required")
        return number_value(Decimal(data))
    if target == BOOL and value.type == STRING:
        return _string_to_bool(str(data))
    raise ConversionError(f"{friendly_name(target)} required")


def _string_to_bool(text: str) -> Value:
    if text in ("true", "1"):
        return bool_value(True)
    if text in ("false", "0"):
        return bool_value(False)
    if text.lower() in ("true", "false"):
        raise ConversionError(
            f'a bool is required; to convert from string, use lowercase "{text.lower()}"'
        )
    raise ConversionError("a bool is required")


def _convert_sequence(value: Value, target: ListType | SetType) -> Value:
    if not isinstance(value.type, (ListType, SetType, TupleType)):
        raise ConversionError(f"{friendly_name(target)} required")
    converted = [
        _convert_at(element, target.element, f"element {index}")
        for index, element in enumerate(value.elements())
    ]
    element_type = _unify(converted, target.element, "list")
    converted = [convert(element, element_type) for element in converted]
    if isinstance(target, SetType):
        return make_set(converted, element_type)
    return make_list(converted, element_type)


def _convert_map(value: Value, target: MapType) -> Value:
    if not isinstance(value.type, (MapType, ObjectType)):
        raise ConversionError(f"{friendly_name(target)} required")
    converted = {
        key: _convert_at(element, target.element, f"element {key!r}")
        for key, element in value.items().items()
    }
    element_type = _unify(list(converted.values()), target.element, "map")
    return make_map(
        {key: convert(element, element_type) for key, element in converted.items()},
        element_type,
    )


def _convert_object(value: Value, target: ObjectType) -> Value:
    if not isinstance(value.type, (MapType, ObjectType)):
        raise ConversionError("object required")
    given = value.items()
    required = target.attribute_types
    missing = [name for name in required if name not in given]
    if missing:
        raise ConversionError(_missing_attributes_message(missing))
    for name in given:
        if name not in required:
            raise ConversionError(f"unsupported attribute {name!r}")
    return make_object(
        {
            name: _convert_at(given[name], ty, f"attribute {name!r}")
            for name, ty in required.items()
        }
    )


def _missing_attributes_message(names: list[str]) -> str:
    quoted = [f'"{name}"' for name in sorted(names)]
    if len(quoted) == 1:
        return f"attribute {quoted[0]} is required"
    listed = ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
    if len(quoted) == 2:
        listed = f"{quoted[0]} and {quoted[1]}"
    return f"attributes {listed} are required"


def _convert_tuple(value: Value, target: TupleType) -> Value:
    if not isinstance(value.type, (ListType, TupleType)):
        raise ConversionError("tuple required")
    elements = value.elements()
    if len(elements) != len(target.elements):
        raise ConversionError(f"tuple required with {len(target.elements)} elements")
    return make_tuple(
        [
            _convert_at(element, ty, f"element {index}")
            for index, (element, ty) in enumerate(zip(elements, target.elements))
        ]
    )


def _convert_at(value: Value, target: Type, step: str) -> Value:
    try:
        return convert(value, target)
    except ConversionError as err:
        raise ConversionError(f"{step}: {err}") from None


def _unify(elements: Sequence[Value], declared: Type, kind: str) -> Type:
    # A collection of `any` takes one element type that every element converts
    # to. go-cty's unification handles more cases. This one handles equal
    # types and mixed primitives, which unify to string.
    if declared != DYNAMIC:
        return declared
    types = {element.type for element in elements if element.type != DYNAMIC}
    if not types:
        return DYNAMIC
    if len(types) == 1:
        return types.pop()
    if all(isinstance(ty, PrimitiveType) for ty in types):
        return STRING
    raise ConversionError(f"all {kind} elements must have the same type")
