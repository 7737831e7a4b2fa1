"""Serialize cty values to msgpack exactly as go-cty's ``msgpack.Marshal`` does.

Nomad's client marshals a decoded config with its own concrete type
(``msgpack.Marshal(val, val.Type())``), and Nomad 1.9.5 and later link go-cty
1.16. Its encoding rules:

- integral numbers that fit an int64 use the smallest msgpack int;
- other numbers that are exactly a float64 use float64 (``cb``);
- every other number is a str holding its decimal text without exponent
  (``"0.1"``, ``"9223372036854775808"``);
- strings are str, never bin; object attributes and map keys are sorted
  byte-wise, and an object writes every attribute of its type.

`msgpack.Packer` writes every header and scalar: with ``use_bin_type=True``
its str, int and float encodings match go-cty's byte for byte, so no byte is
written by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal

import msgpack

from wasmtime_driver.ctytypes import MapType, ObjectType
from wasmtime_driver.ctyvalue import Value, number_text

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def marshal(value: Value) -> bytes:
    """Return the msgpack bytes go-cty 1.16 produces for `value` with its own type."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    _pack(packer, value)
    packed: bytes = packer.bytes()
    return packed


def _pack(packer: msgpack.Packer, value: Value) -> None:
    data = value.data
    if data is None or isinstance(data, (bool, str)):
        packer.pack(data)
    elif isinstance(data, Decimal):
        packer.pack(_number(data))
    elif isinstance(data, tuple):
        packer.pack_array_header(len(data))
        for element in data:
            _pack(packer, element)
    elif isinstance(value.type, ObjectType):
        _pack_object(packer, value.type, data)
    else:
        assert isinstance(value.type, MapType)
        _pack_map(packer, data)


def _pack_object(packer: msgpack.Packer, ty: ObjectType, data: object) -> None:
    attributes = sorted(ty.attribute_types, key=lambda name: name.encode())
    packer.pack_map_header(len(attributes))
    for name in attributes:
        packer.pack(name)
        element = data.get(name) if isinstance(data, Mapping) else None
        if element is None:
            packer.pack(None)
        else:
            _pack(packer, element)


def _pack_map(packer: msgpack.Packer, data: object) -> None:
    assert isinstance(data, Mapping)
    packer.pack_map_header(len(data))
    for key in sorted(data, key=lambda k: k.encode()):
        packer.pack(key)
        _pack(packer, data[key])


def _number(number: Decimal) -> int | float | str:
    """Return the Python scalar whose msgpack form is go-cty's for `number`."""
    if number.is_infinite():
        return math.inf if number > 0 else -math.inf
    if number.is_nan():
        raise ValueError("cannot marshal NaN: cty numbers are never NaN")
    numerator, denominator = number.as_integer_ratio()
    if denominator == 1:
        if _INT64_MIN <= numerator <= _INT64_MAX:
            return numerator
        return number_text(number)
    as_float = float(number)
    if math.isfinite(as_float) and Decimal(as_float) == number:
        return as_float
    return number_text(number)
