"""ctymsgpack: go-cty's msgpack encoding of decoded config values."""

from __future__ import annotations

import json
from decimal import Decimal

import msgpack  # type: ignore[import-untyped]
import pytest

from wasmtime_driver import hcldec
from wasmtime_driver.ctymsgpack import marshal
from wasmtime_driver.hcldec import (
    NUMBER,
    STRING,
    MapType,
    ObjectType,
    Value,
    make_list,
    make_map,
    make_object,
    make_set,
    make_tuple,
    null,
    number_value,
    string_value,
)
from wasmtime_driver.hclspec import Attr, Object

NUMBER_SPEC = Object({"n": Attr("n", "number")})

# Number encodings go-cty 1.16 produces for {"n": X}, after the 81 a1 6e prefix.
NUMBER_TABLE = [
    ("0", "00"),
    ("127", "7f"),
    ("128", "cc80"),
    ("255", "ccff"),
    ("256", "cd0100"),
    ("65535", "cdffff"),
    ("65536", "ce00010000"),
    ("4294967295", "ceffffffff"),
    ("4294967296", "cf0000000100000000"),
    ("9223372036854775807", "cf7fffffffffffffff"),
    ("-1", "ff"),
    ("-32", "e0"),
    ("-33", "d0df"),
    ("-128", "d080"),
    ("-129", "d1ff7f"),
    ("-32768", "d18000"),
    ("-32769", "d2ffff7fff"),
    ("-9223372036854775808", "d38000000000000000"),
    ("2.5", "cb4004000000000000"),
    ("-0.5", "cbbfe0000000000000"),
    ("3.0", "03"),
    ("0.1", "a3302e31"),
    ("9223372036854775808", "b3" + b"9223372036854775808".hex()),
    ("1e20", "b5" + b"100000000000000000000".hex()),
    ("-9223372036854775809", "b4" + b"-9223372036854775809".hex()),
    ("1.5e300", "da012d" + ("15" + "0" * 299).encode().hex()),
    ('"42"', "2a"),
]


@pytest.mark.parametrize(("json_number", "encoded"), NUMBER_TABLE)
def test_marshal_number_table(json_number: str, encoded: str) -> None:
    config = json.loads(f'{{"n": {json_number}}}', parse_float=Decimal)

    data = marshal(hcldec.decode(NUMBER_SPEC, config))

    assert data.hex() == "81a16e" + encoded


def test_marshal_number_as_string_decodes_exactly() -> None:
    data = marshal(number_value(Decimal("0.30000000000000000000001")))

    assert msgpack.unpackb(data, raw=False) == "0.30000000000000000000001"


def test_marshal_trailing_zeros_dropped() -> None:
    assert marshal(number_value(Decimal("0.10"))) == msgpack.packb("0.1")


def test_marshal_infinity_as_float64() -> None:
    assert marshal(number_value(Decimal("Infinity"))).hex() == "cb7ff0000000000000"
    assert marshal(number_value(Decimal("-Infinity"))).hex() == "cbfff0000000000000"


def test_marshal_nan_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        marshal(Value(NUMBER, Decimal("NaN")))


@pytest.mark.parametrize(
    ("length", "header"),
    [(0, "a0"), (31, "bf"), (32, "d920"), (255, "d9ff"), (256, "da0100")],
)
def test_marshal_string_lengths_use_str(length: int, header: str) -> None:
    data = marshal(string_value("x" * length))

    assert data.hex() == header + "78" * length


def test_marshal_string_utf8() -> None:
    assert marshal(string_value("é")).hex() == "a2c3a9"


@pytest.mark.parametrize(("count", "header"), [(15, "9f"), (16, "dc0010")])
def test_marshal_list_headers(count: int, header: str) -> None:
    value = make_list([number_value(1)] * count, NUMBER)

    assert marshal(value).hex() == header + "01" * count


@pytest.mark.parametrize(("count", "header"), [(15, "8f"), (16, "de0010")])
def test_marshal_map_headers(count: int, header: str) -> None:
    keys = [f"k{i:02d}" for i in range(count)]
    value = make_map({k: null(STRING) for k in keys}, STRING)

    data = marshal(value)

    assert data.hex().startswith(header)
    assert msgpack.unpackb(data, raw=False) == dict.fromkeys(keys)


def test_marshal_object_attributes_sorted_bytewise() -> None:
    value = make_object(
        {"b": number_value(1), "B": number_value(2), "a": number_value(3)}
    )

    assert list(msgpack.unpackb(marshal(value), raw=False)) == ["B", "a", "b"]


def test_marshal_object_absent_attribute_as_nil() -> None:
    ty = ObjectType.of({"x": STRING, "y": NUMBER})
    value = Value(ty, {"x": string_value("v")})

    assert marshal(value).hex() == "82a178a176a179c0"


def test_marshal_map_keys_sorted() -> None:
    value = make_map({"b": string_value("2"), "a": string_value("1")}, STRING)

    assert marshal(value).hex() == "82a161a131a162a132"
    assert value.type == MapType(STRING)


@pytest.mark.parametrize(
    ("elements", "element_type", "expected"),
    [
        (["z", "a", "z", "B"], STRING, ["B", "a", "z"]),
        ([3, -1, 2], NUMBER, [-1, 2, 3]),
        ([True, False], hcldec.BOOL, [False, True]),
    ],
)
def test_marshal_set_order(
    elements: list[object], element_type: hcldec.Type, expected: list[object]
) -> None:
    value = make_set([hcldec.from_python(e) for e in elements], element_type)

    assert msgpack.unpackb(marshal(value), raw=False) == expected


def test_marshal_set_null_last() -> None:
    value = make_set([null(STRING), string_value("a")], STRING)

    assert marshal(value).hex() == "92a161c0"


def test_marshal_tuple_and_null() -> None:
    value = make_tuple([string_value("a"), null(NUMBER), hcldec.bool_value(True)])

    assert marshal(value).hex() == "93a161c0c3"


def test_marshal_round_trips_through_generic_decoder() -> None:
    value = hcldec.from_python(
        {"s": "x", "n": Decimal("1.5"), "l": [1, 2], "o": {"k": None}}
    )

    decoded = msgpack.unpackb(marshal(value), raw=False)

    assert decoded == {"l": [1, 2], "n": 1.5, "o": {"k": None}, "s": "x"}
