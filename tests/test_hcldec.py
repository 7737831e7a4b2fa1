"""hcldec: decoding config maps against hclspec schemas as Nomad's client does."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from wasmtime_driver import hcldec, jobspec
from wasmtime_driver.ctymsgpack import marshal
from wasmtime_driver.hcldec import DecodeError, InvalidSpecError, decode, to_python
from wasmtime_driver.hclspec import (
    Array,
    Attr,
    Block,
    BlockAttrs,
    BlockList,
    BlockMap,
    BlockSet,
    Default,
    Literal,
    Object,
    Spec,
    spec_from_protojson,
)

# Bytes produced by go-cty 1.16 and hcl 2.20 along Nomad's own decode route.
VECTORS = json.loads(
    (Path(__file__).parent / "data" / "cty-msgpack.json").read_text(encoding="utf-8")
)
SPECS = {
    name: spec_from_protojson(entry["protojson"])
    for name, entry in VECTORS["specs"].items()
}
GOOD_VECTORS = [v for v in VECTORS["vectors"] if "hex" in v]
ERROR_VECTORS = [v for v in VECTORS["vectors"] if "error" in v]


def exact_json(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def hexbytes(text: str) -> str:
    return text.replace(" ", "")


@pytest.mark.parametrize("vector", GOOD_VECTORS, ids=lambda v: v["name"])
def test_decode_vector_matches_go_cty(vector: dict[str, Any]) -> None:
    value = decode(SPECS[vector["spec"]], exact_json(vector["nomad_json"]))

    assert marshal(value).hex() == vector["hex"]
    assert to_python(value) == exact_json(json.dumps(vector["value"]))
    assert hcldec.type_to_json(value.type) == vector["type"]


@pytest.mark.parametrize(
    "vector",
    [v for v in GOOD_VECTORS if v["input_format"] == "hcl"],
    ids=lambda v: v["name"],
)
def test_decode_vector_from_hcl_input(vector: dict[str, Any]) -> None:
    config = jobspec.parse_config_body(vector["input"])

    value = decode(SPECS[vector["spec"]], config)

    assert marshal(value).hex() == vector["hex"]


@pytest.mark.parametrize("vector", ERROR_VECTORS, ids=lambda v: v["name"])
def test_decode_vector_error(vector: dict[str, Any]) -> None:
    # The vector's message starts with a source position that JSON maps lack.
    message = vector["error"].split(": ", 1)[1]
    key = re.search(r'"(\w+)"', message)
    assert key is not None

    with pytest.raises(DecodeError, match=re.escape(message)) as caught:
        decode(SPECS[vector["spec"]], exact_json(vector["nomad_json"]))

    assert key.group(1) in str(caught.value)


@pytest.mark.parametrize(
    "vector",
    [v for v in ERROR_VECTORS if v["input_format"] == "hcl"],
    ids=lambda v: v["name"],
)
def test_decode_vector_error_from_hcl_input(vector: dict[str, Any]) -> None:
    message = vector["error"].split(": ", 1)[1]

    with pytest.raises(DecodeError, match=re.escape(message)):
        decode(SPECS[vector["spec"]], jobspec.parse_config_body(vector["input"]))


# Worked examples of the encoding, with schemas built from hclspec types.

MAIN_OBJECT = Object(
    {
        "mainFuncName": Attr("mainFuncName", "string"),
        "args": Attr("args", "list(number)"),
    }
)
EXAMPLE_1_SPEC = Object(
    {
        "modulePath": Attr("modulePath", "string", required=True),
        "main": Block("main", MAIN_OBJECT),
    }
)
EXAMPLE_1_INPUT = (
    '{"main":[{"args":[1,2.5,-3],"mainFuncName":"run"}],"modulePath":"/srv/app.wasm"}'
)
EXAMPLE_1_HEX = (
    "82 a4 6d61696e 82 a4 61726773 93 01 cb4004000000000000 fd "
    "ac 6d61696e46756e634e616d65 a3 72756e "
    "aa 6d6f64756c6550617468 ad 2f7372762f6170702e7761736d"
)


def test_decode_example_block_object() -> None:
    value = decode(EXAMPLE_1_SPEC, exact_json(EXAMPLE_1_INPUT))

    assert marshal(value).hex() == hexbytes(EXAMPLE_1_HEX)
    assert to_python(value) == {
        "main": {"args": [1, Decimal("2.5"), -3], "mainFuncName": "run"},
        "modulePath": "/srv/app.wasm",
    }


def test_decode_example_block_as_plain_object() -> None:
    config = exact_json(EXAMPLE_1_INPUT)
    config["main"] = config["main"][0]

    assert marshal(decode(EXAMPLE_1_SPEC, config)).hex() == hexbytes(EXAMPLE_1_HEX)


@pytest.mark.parametrize(
    ("main", "expected"),
    [
        (
            None,
            "82a46d61696ec0aa6d6f64756c6550617468ad2f7372762f6170702e7761736d",
        ),
        (
            [{"mainFuncName": "run"}],
            (
                "82a46d61696e82a461726773c0ac6d61696e46756e634e616d65a372756e"
                "aa6d6f64756c6550617468ad2f7372762f6170702e7761736d"
            ),
        ),
        (
            [{"mainFuncName": "run", "args": []}],
            (
                "82a46d61696e82a46172677390ac6d61696e46756e634e616d65a372756e"
                "aa6d6f64756c6550617468ad2f7372762f6170702e7761736d"
            ),
        ),
        (
            [{}],
            (
                "82a46d61696e82a461726773c0ac6d61696e46756e634e616d65c0"
                "aa6d6f64756c6550617468ad2f7372762f6170702e7761736d"
            ),
        ),
    ],
    ids=["absent", "args-absent", "args-empty", "empty-block"],
)
def test_decode_example_block_variants(main: Any, expected: str) -> None:
    config: dict[str, Any] = {"modulePath": "/srv/app.wasm"}
    if main is not None:
        config["main"] = main

    assert marshal(decode(EXAMPLE_1_SPEC, config)).hex() == expected


def test_decode_example_block_list() -> None:
    spec = Object(
        {
            "modulePath": Attr("modulePath", "string", required=True),
            "main": BlockList("main", MAIN_OBJECT),
        }
    )
    with_main = marshal(decode(spec, exact_json(EXAMPLE_1_INPUT))).hex()
    without_main = marshal(decode(spec, {"modulePath": "/srv/app.wasm"})).hex()

    assert with_main == hexbytes(EXAMPLE_1_HEX).replace("6d61696e82", "6d61696e9182", 1)
    assert without_main.startswith("82a46d61696e90")


def test_decode_example_object_attr_rejects_hcl2_shape() -> None:
    spec = Object(
        {
            "modulePath": Attr("modulePath", "string", required=True),
            "main": Attr("main", "object({mainFuncName=string, args=list(number)})"),
        }
    )
    raw = exact_json(EXAMPLE_1_INPUT)
    raw["main"] = raw["main"][0]

    assert marshal(decode(spec, raw)).hex() == hexbytes(EXAMPLE_1_HEX)
    with pytest.raises(
        DecodeError,
        match='Inappropriate value for attribute "main": object required',
    ):
        decode(spec, exact_json(EXAMPLE_1_INPUT))


def test_decode_example_defaults() -> None:
    spec = Object(
        {
            "s": Default(Attr("s", "string"), Literal('"hello"')),
            "l": Default(Attr("l", "list(string)"), Literal("[]")),
            "n": Default(Attr("n", "number"), Literal("5")),
            "m": Default(Attr("m", "map(string)"), Literal("{}")),
        }
    )
    value = decode(spec, {})

    assert marshal(value).hex() == hexbytes(
        "84 a16c 90 a16d 80 a16e 05 a173 a568656c6c6f"
    )
    assert hcldec.type_to_json(value.type) == [
        "object",
        {"l": ["tuple", []], "m": ["object", {}], "n": "number", "s": "string"},
    ]


def test_decode_example_default_only_when_absent() -> None:
    spec = Object(
        {
            "b": Attr("b", "bool"),
            "d": Default(Attr("d", "bool"), Literal("true")),
        }
    )

    assert marshal(decode(spec, {"b": False})).hex() == "82a162c2a164c3"


EXAMPLE_5_SPEC = Object(
    {
        "m": Attr("m", "map(string)"),
        "st": Attr("st", "set(string)"),
        "ba": BlockAttrs("ba", "string"),
        "bm": BlockMap("bm", ("name",), Object({"v": Attr("v", "number")})),
        "bs": BlockSet("bs", Object({"v": Attr("v", "number")})),
        "tp": Attr("tp", "tuple([string, number])"),
    }
)


def test_decode_example_collections_absent() -> None:
    expected = "86 a26261 c0 a2626d 80 a26273 90 a16d c0 a27374 c0 a27470 c0"

    assert marshal(decode(EXAMPLE_5_SPEC, {})).hex() == hexbytes(expected)


def test_decode_example_collections_given() -> None:
    config = {
        "m": [{"b": "2", "a": "1"}][0],
        "st": ["z", "a", "z"],
        "ba": [{"k2": "v2", "k1": "v1"}],
        "bm": [{"foo": [{"v": 1}]}, {"bar": [{"v": 2}]}],
        "bs": [{"v": 2}, {"v": 1}],
        "tp": ["a", 1],
    }
    expected = (
        "86 a26261 82 a26b31 a27631 a26b32 a27632"
        " a2626d 82 a3626172 81 a176 02 a3666f6f 81 a176 01"
        " a26273 92 81 a176 01 81 a176 02"
        " a16d 82 a161 a131 a162 a132"
        " a27374 92 a161 a17a"
        " a27470 92 a161 01"
    )

    assert marshal(decode(EXAMPLE_5_SPEC, config)).hex() == hexbytes(expected)


def test_decode_block_map_json_object_shape() -> None:
    value = decode(EXAMPLE_5_SPEC, {"bm": {"foo": {"v": 1}, "bar": {"v": 2}}})

    assert to_python(value)["bm"] == {"bar": {"v": 2}, "foo": {"v": 1}}
    assert hcldec.type_to_json(value.type)[1]["bm"] == [
        "map",
        ["object", {"v": "number"}],
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"a": 1, "b": ["p", "q"]}, "81a17882a16101a16292a170a171"),
        ("str", "81a178a3737472"),
        (None, "81a178c0"),
    ],
    ids=["object", "string", "absent"],
)
def test_decode_example_dynamic(given: Any, expected: str) -> None:
    spec = Object({"x": Attr("x", "any")})
    config = {} if given is None else {"x": given}

    assert marshal(decode(spec, config)).hex() == expected


def test_decode_dynamic_keeps_value_type() -> None:
    value = decode(Object({"x": Attr("x", "any")}), {"x": {"a": 1, "b": ["p", "q"]}})

    assert hcldec.type_to_json(value.type) == [
        "object",
        {
            "x": [
                "object",
                {"a": "number", "b": ["tuple", ["string", "string"]]},
            ]
        },
    ]


def test_decode_example_list_of_maps() -> None:
    spec = Object({"labels": Attr("labels", "list(map(string))")})

    value = decode(spec, {"labels": [{"a": "b", "c": "d"}]})

    assert marshal(value).hex() == "81a66c6162656c739182a161a162a163a164"
    with pytest.raises(DecodeError, match="list of map of string required"):
        decode(spec, {"labels": {"a": "b"}})


def test_decode_example_plugin_config_default() -> None:
    spec = Object({"enabled": Default(Attr("enabled", "bool"), Literal("true"))})

    assert marshal(decode(spec, {})).hex() == "81a7656e61626c6564c3"


# Conversions and strings


@pytest.mark.parametrize(
    ("type_expr", "given", "expected"),
    [
        ("string", 5, "5"),
        ("string", Decimal("2.50"), "2.5"),
        ("string", True, "true"),
        ("bool", "true", True),
        ("bool", "0", False),
        ("number", "42", 42),
        ("number", "-1.5e3", -1500),
        ("number", "0.1", Decimal("0.1")),
        ("list(string)", [1, "a", False], ["1", "a", "false"]),
        ("set(number)", ["3", 1, 3], [1, 3]),
        ("map(number)", {"b": "2", "a": 1}, {"a": 1, "b": 2}),
        ("tuple([string, bool])", [1, "false"], ["1", False]),
        ("object({a=number})", {"a": "7"}, {"a": 7}),
        ("list(any)", [1, "x"], ["1", "x"]),
    ],
)
def test_decode_attr_converts(type_expr: str, given: Any, expected: Any) -> None:
    value = decode(Object({"x": Attr("x", type_expr)}), {"x": given})

    assert to_python(value) == {"x": expected}


def test_decode_number_from_string_encodes_as_int() -> None:
    value = decode(Object({"n": Attr("n", "number")}), {"n": "42"})

    assert marshal(value).hex() == "81a16e2a"


@pytest.mark.parametrize(
    ("type_expr", "given", "message"),
    [
        ("number", "forty", "a number is required"),
        ("number", True, "number required"),
        ("bool", "yes", "a bool is required"),
        ("bool", "True", 'use lowercase "true"'),
        ("bool", 1, "bool required"),
        ("string", [1], "string required"),
        ("list(number)", [1, "x"], "element 1: a number is required"),
        ("list(number)", {"a": 1}, "list of number required"),
        ("object({a=number})", {"b": 1}, 'attribute "a" is required'),
        ("object({a=number})", {"a": 1, "b": 1}, "unsupported attribute 'b'"),
        ("tuple([string])", ["a", "b"], "tuple required with 1 elements"),
    ],
)
def test_decode_attr_conversion_error(type_expr: str, given: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)) as caught:
        decode(Object({"field": Attr("field", type_expr)}), {"field": given})

    assert 'Inappropriate value for attribute "field"' in str(caught.value)


def test_decode_string_nfc_normalized() -> None:
    value = decode(Object({"s": Attr("s", "string")}), {"s": "e\u0301"})

    assert to_python(value) == {"s": "\u00e9"}
    assert marshal(value).hex() == "81a173a2c3a9"


def test_decode_object_key_nfc_normalized() -> None:
    value = decode(Object({"x": Attr("x", "any")}), {"x": {"e\u0301": 1}})

    assert to_python(value) == {"x": {"\u00e9": 1}}


def test_decode_float_input_uses_shortest_text() -> None:
    value = decode(Object({"n": Attr("n", "number")}), {"n": 0.1})

    assert to_python(value) == {"n": Decimal("0.1")}
    assert marshal(value).hex() == "81a16ea3302e31"


# Body structure


def test_decode_unknown_key_suggests_name() -> None:
    spec = Object({"modulePath": Attr("modulePath", "string")})

    with pytest.raises(DecodeError, match='Did you mean "modulePath"'):
        decode(spec, {"modulepath": "x"})


def test_decode_collects_every_diagnostic() -> None:
    spec = Object({"a": Attr("a", "string", required=True)})

    with pytest.raises(DecodeError) as caught:
        decode(spec, {"b": 1, "c": 2})

    assert len(caught.value.diagnostics) == 3


def test_decode_root_null_rejected() -> None:
    with pytest.raises(DecodeError, match="Root value must be object"):
        decode(Object({"a": Attr("a", "string")}), None)


def test_decode_comment_property_ignored() -> None:
    value = decode(Object({"a": Attr("a", "string")}), {"//": "note", "a": "x"})

    assert to_python(value) == {"a": "x"}


def test_decode_nested_unknown_key_names_block() -> None:
    with pytest.raises(DecodeError, match=r'^main: Extraneous.*"bogus"'):
        decode(EXAMPLE_1_SPEC, {"modulePath": "m", "main": [{"bogus": 1}]})


def test_decode_duplicate_block() -> None:
    with pytest.raises(DecodeError, match="Duplicate main block"):
        decode(EXAMPLE_1_SPEC, {"modulePath": "m", "main": [{}, {}]})


def test_decode_missing_required_block() -> None:
    spec = Object({"main": Block("main", MAIN_OBJECT, required=True)})

    with pytest.raises(DecodeError, match='Missing main block; A block of type "main"'):
        decode(spec, {})


def test_decode_block_wrong_json_type() -> None:
    with pytest.raises(DecodeError, match="Incorrect JSON value type"):
        decode(EXAMPLE_1_SPEC, {"modulePath": "m", "main": "run"})


def test_decode_null_block_is_absent() -> None:
    value = decode(EXAMPLE_1_SPEC, {"modulePath": "m", "main": None})

    assert to_python(value)["main"] is None


@pytest.mark.parametrize(
    ("count", "message"),
    [(0, 'At least 1 "item" blocks are required'), (3, 'No more than 2 "item"')],
)
def test_decode_block_list_item_limits(count: int, message: str) -> None:
    spec = Object({"item": BlockList("item", Object({}), min_items=1, max_items=2)})

    with pytest.raises(DecodeError, match=message):
        decode(spec, {"item": [{}] * count})


def test_decode_block_set_deduplicates() -> None:
    spec = Object({"bs": BlockSet("bs", Object({"v": Attr("v", "number")}))})

    value = decode(spec, {"bs": [{"v": 1}, {"v": 1}]})

    assert to_python(value) == {"bs": [{"v": 1}]}


def test_decode_block_map_duplicate_label() -> None:
    with pytest.raises(DecodeError, match='A block for bm "foo" was already defined'):
        decode(EXAMPLE_5_SPEC, {"bm": [{"foo": [{"v": 1}]}, {"foo": [{"v": 2}]}]})


def test_decode_block_map_two_labels() -> None:
    spec = Object({"r": BlockMap("r", ("kind", "name"), Object({}))})

    value = decode(spec, {"r": {"a": {"x": {}, "y": {}}, "b": {"z": {}}}})

    assert to_python(value) == {"r": {"a": {"x": {}, "y": {}}, "b": {"z": {}}}}
    assert hcldec.type_to_json(value.type) == [
        "object",
        {"r": ["map", ["map", ["object", {}]]]},
    ]


def test_decode_block_attrs_converts_values() -> None:
    value = decode(EXAMPLE_5_SPEC, {"ba": {"n": 1}})

    assert to_python(value)["ba"] == {"n": "1"}
    with pytest.raises(DecodeError, match='Invalid value for attribute of "ba" block'):
        decode(EXAMPLE_5_SPEC, {"ba": {"n": [1]}})


def test_decode_array_spec_is_tuple() -> None:
    spec = Array((Attr("a", "string"), Literal("1")))

    value = decode(spec, {"a": "x"})

    assert to_python(value) == ["x", 1]
    assert hcldec.type_to_json(value.type) == ["tuple", ["string", "number"]]


def test_decode_empty_name_takes_object_key() -> None:
    spec = Object({"path": Attr("", "string")})

    assert to_python(decode(spec, {"path": "p"})) == {"path": "p"}


# Literals and type expressions


@pytest.mark.parametrize(
    ("literal", "expected", "type_json"),
    [
        ('"hello"', "hello", "string"),
        ("5", 5, "number"),
        ("-0.25", Decimal("-0.25"), "number"),
        ("true", True, "bool"),
        ("null", None, "dynamic"),
        ("[]", [], ["tuple", []]),
        ("{}", {}, ["object", {}]),
        ('[1, "a"]', [1, "a"], ["tuple", ["number", "string"]]),
        (
            '{ enabled = true, "type" = "lfu", n = { x = 1 } }',
            {"enabled": True, "type": "lfu", "n": {"x": 1}},
            [
                "object",
                {"enabled": "bool", "n": ["object", {"x": "number"}], "type": "string"},
            ],
        ),
        ('"a\\tb"', "a\tb", "string"),
    ],
)
def test_evaluate_literal(literal: str, expected: Any, type_json: Any) -> None:
    value = hcldec.evaluate_literal(literal)

    assert to_python(value) == expected
    assert hcldec.type_to_json(value.type) == type_json


@pytest.mark.parametrize(
    ("literal", "message"),
    [
        ("hello", "Variables not allowed"),
        ("", "Value must be specified"),
        ("upper(1)", "function calls"),
    ],
)
def test_evaluate_literal_invalid(literal: str, message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        hcldec.evaluate_literal(literal)


@pytest.mark.parametrize(
    ("expression", "type_json"),
    [
        ("string", "string"),
        ("any", "dynamic"),
        ("list(map(string))", ["list", ["map", "string"]]),
        ("set( number )", ["set", "number"]),
        (
            "object({a = string, b = list(bool)})",
            ["object", {"a": "string", "b": ["list", "bool"]}],
        ),
        ("tuple([string, number])", ["tuple", ["string", "number"]]),
    ],
)
def test_parse_type(expression: str, type_json: Any) -> None:
    assert hcldec.type_to_json(hcldec.parse_type(expression)) == type_json


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "Missing expression"),
        ("list", "unexpected end, expected '\\('"),
        ("text", "unknown type keyword 'text'"),
        ("list(string) x", "extra text"),
    ],
)
def test_parse_type_invalid(expression: str, message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        hcldec.parse_type(expression)


# Templates and variables

TASK_VARIABLES = hcldec.task_variables(
    {"NOMAD_TASK_DIR": "/alloc/t/local", "FOO": "bar", "with.dot": "d"}
)
STRING_SPEC = Object({"s": Attr("s", "string")})


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${NOMAD_TASK_DIR}/m.wasm", "/alloc/t/local/m.wasm"),
        ('x-${env["FOO"]}', "x-bar"),
        ('${env["with.dot"]}', "d"),
        ("${env.FOO}", "bar"),
        ("$${NOMAD_TASK_DIR}", "${NOMAD_TASK_DIR}"),
        ("100%%{x}", "100%{x}"),
        ("n=${-1.5}", "n=-1.5"),
        ("a ${~ FOO ~} b", "abarb"),
        ("plain", "plain"),
    ],
)
def test_decode_template(template: str, expected: str) -> None:
    value = decode(STRING_SPEC, {"s": template}, TASK_VARIABLES)

    assert to_python(value) == {"s": expected}


def test_decode_template_single_interpolation_keeps_type() -> None:
    spec = Object({"x": Attr("x", "any")})

    value = decode(spec, {"x": "${12345678901234567890.5}"}, TASK_VARIABLES)

    assert to_python(value) == {"x": Decimal("12345678901234567890.5")}


@pytest.mark.parametrize(
    ("template", "variables", "message"),
    [
        ("${NOMAD_TASK_DIR}", None, "Variables not allowed"),
        ("${NOMAD_NOPE}", TASK_VARIABLES, 'There is no variable named "NOMAD_NOPE"'),
        ("%{ if true }x%{ endif }", TASK_VARIABLES, "not support"),
        ('${upper("x")}', TASK_VARIABLES, "not operators or function calls"),
        ("${1 + 2}", TASK_VARIABLES, "not operators or function calls"),
        ("${null}x", TASK_VARIABLES, "Cannot include a null value"),
        ("${NOMAD_TASK_DIR", TASK_VARIABLES, "no closing brace"),
    ],
)
def test_decode_template_error(
    template: str, variables: hcldec.Variables, message: str
) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)) as caught:
        decode(STRING_SPEC, {"s": template}, variables)

    assert str(caught.value).startswith("s: ")


def test_decode_template_in_plugin_config_rejected() -> None:
    spec: Spec = Object({"dir": Attr("dir", "string")})

    with pytest.raises(DecodeError, match="Variables not allowed"):
        decode(spec, {"dir": "${HOME}"})


def test_decode_set_equal_numbers_merged() -> None:
    spec = Object({"s": Attr("s", "set(number)")})

    value = decode(spec, {"s": [Decimal("1.50"), Decimal("1.5"), 1]})

    assert to_python(value) == {"s": [1, Decimal("1.5")]}


def test_decode_template_nested_string_interpolates() -> None:
    value = decode(STRING_SPEC, {"s": '${"in-${FOO}"}'}, TASK_VARIABLES)

    assert to_python(value) == {"s": "in-bar"}
