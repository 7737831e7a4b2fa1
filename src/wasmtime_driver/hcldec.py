"""Decode a Nomad config map against an hclspec the way a Nomad client does.

Nomad's client JSON-encodes a task's ``config`` map, parses it with HCL's JSON
syntax and decodes it with ``hcldec`` (hashicorp/hcl v2) into a go-cty value.
This module repeats that step in Python. `decode` returns a `Value`: a cty
value that carries its own concrete type, ready for
`wasmtime_driver.ctymsgpack.marshal`. `to_python` turns a `Value` into plain
Python data (numbers become `int` when integral, else `decimal.Decimal`).

Numbers are `decimal.Decimal` throughout, so no value passes through a float.
Error messages repeat hcldec's diagnostics ("Summary; Detail").

The module has four parts, in order: cty types and their HCL type
expressions, cty values and conversion, HCL expressions (templates, literals),
and the hcldec spec decoder.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, TypeAlias

import hcl2
from hcl2.rules.literal_rules import FloatLitRule
from hcl2.rules.tokens import FloatLiteral
from hcl2.utils import process_escape_sequences
from hcl2.walk import find_all
from lark.exceptions import LarkError

from wasmtime_driver.errors import ConfigError
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
)

# ---------------------------------------------------------------------------
# cty types


@dataclass(frozen=True)
class PrimitiveType:
    """``string``, ``number`` or ``bool``; ``dynamic`` stands for HCL's ``any``."""

    name: str


STRING = PrimitiveType("string")
NUMBER = PrimitiveType("number")
BOOL = PrimitiveType("bool")
DYNAMIC = PrimitiveType("dynamic")


@dataclass(frozen=True)
class ListType:
    element: Type


@dataclass(frozen=True)
class SetType:
    element: Type


@dataclass(frozen=True)
class MapType:
    element: Type


@dataclass(frozen=True)
class ObjectType:
    """Attribute names and types, sorted by name so that equal types compare equal."""

    attributes: tuple[tuple[str, Type], ...]

    @classmethod
    def of(cls, attributes: Mapping[str, Type]) -> ObjectType:
        return cls(tuple(sorted(attributes.items())))

    @property
    def attribute_types(self) -> dict[str, Type]:
        return dict(self.attributes)


@dataclass(frozen=True)
class TupleType:
    elements: tuple[Type, ...]


Type: TypeAlias = PrimitiveType | ListType | SetType | MapType | ObjectType | TupleType


def type_to_json(ty: Type) -> Any:
    """Return go-cty's JSON form of `ty`, e.g. ``["list", "number"]``."""
    if isinstance(ty, PrimitiveType):
        return ty.name
    if isinstance(ty, ListType):
        return ["list", type_to_json(ty.element)]
    if isinstance(ty, SetType):
        return ["set", type_to_json(ty.element)]
    if isinstance(ty, MapType):
        return ["map", type_to_json(ty.element)]
    if isinstance(ty, ObjectType):
        return ["object", {name: type_to_json(t) for name, t in ty.attributes}]
    return ["tuple", [type_to_json(t) for t in ty.elements]]


def friendly_name(ty: Type) -> str:
    """Return go-cty's wording for `ty` in messages, e.g. ``list of number``."""
    if isinstance(ty, PrimitiveType):
        return "any type" if ty is DYNAMIC else ty.name
    if isinstance(ty, ListType):
        return f"list of {friendly_name(ty.element)}"
    if isinstance(ty, SetType):
        return f"set of {friendly_name(ty.element)}"
    if isinstance(ty, MapType):
        return f"map of {friendly_name(ty.element)}"
    return "object" if isinstance(ty, ObjectType) else "tuple"


class InvalidSpecError(ValueError):
    """A driver schema that Nomad would reject: a bad type expression or literal."""


_TYPE_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_-]*)|(.))", re.DOTALL)
_PRIMITIVE_KEYWORDS = {"string": STRING, "number": NUMBER, "bool": BOOL, "any": DYNAMIC}


@functools.lru_cache(maxsize=256)
def parse_type(expression: str) -> Type:
    """Parse an HCL type expression such as ``list(number)`` or ``object({a=string})``.

    Raises `InvalidSpecError` for anything else, including an empty string,
    which Nomad rejects with "Missing expression".
    """
    tokens = [m.group(1) or m.group(2) for m in _TYPE_TOKEN.finditer(expression)]
    tokens = [t for t in tokens if t is not None and t.strip()]
    if not tokens:
        raise InvalidSpecError("invalid type expression '': Missing expression")
    parser = _TypeParser(expression, tokens)
    ty = parser.parse()
    if parser.position != len(tokens):
        raise parser.fail("extra text after the type")
    return ty


class _TypeParser:
    # A recursive-descent parser, because HCL's type expressions are a small
    # fixed grammar that python-hcl2 only returns as unparsed text.
    def __init__(self, text: str, tokens: list[str]) -> None:
        self.text = text
        self.tokens = tokens
        self.position = 0

    def fail(self, problem: str) -> InvalidSpecError:
        return InvalidSpecError(f"invalid type expression {self.text!r}: {problem}")

    def take(self, expected: str | None = None) -> str:
        if self.position >= len(self.tokens):
            hint = f", expected {expected!r}" if expected else ""
            raise self.fail(f"unexpected end{hint}")
        token = self.tokens[self.position]
        if expected is not None and token != expected:
            raise self.fail(f"expected {expected!r}, found {token!r}")
        self.position += 1
        return token

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def parse(self) -> Type:
        keyword = self.take()
        if keyword in _PRIMITIVE_KEYWORDS:
            return _PRIMITIVE_KEYWORDS[keyword]
        if keyword not in ("list", "set", "map", "object", "tuple"):
            raise self.fail(f"unknown type keyword {keyword!r}")
        self.take("(")
        ty = self.parse_arguments(keyword)
        self.take(")")
        return ty

    def parse_arguments(self, keyword: str) -> Type:
        if keyword == "object":
            return self.parse_object()
        if keyword == "tuple":
            return self.parse_tuple()
        element = self.parse()
        if keyword == "list":
            return ListType(element)
        return SetType(element) if keyword == "set" else MapType(element)

    def parse_object(self) -> ObjectType:
        self.take("{")
        attributes: dict[str, Type] = {}
        while self.peek() != "}":
            name = self.take()
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
                raise self.fail(f"invalid attribute name {name!r}")
            if self.peek() == ":":
                self.take(":")
            else:
                self.take("=")
            attributes[name] = self.parse()
            if self.peek() == ",":
                self.take(",")
        self.take("}")
        return ObjectType.of(attributes)

    def parse_tuple(self) -> TupleType:
        self.take("[")
        elements: list[Type] = []
        while self.peek() != "]":
            elements.append(self.parse())
            if self.peek() == ",":
                self.take(",")
        self.take("]")
        return TupleType(tuple(elements))


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


# ---------------------------------------------------------------------------
# Diagnostics


class DecodeError(ConfigError):
    """A config that hcldec rejects; `diagnostics` lists each message."""

    def __init__(self, diagnostics: Sequence[str]) -> None:
        super().__init__("\n".join(diagnostics))
        self.diagnostics = list(diagnostics)


class _DiagnosticError(Exception):
    def __init__(self, summary: str, detail: str) -> None:
        super().__init__(f"{summary}; {detail}")


# ---------------------------------------------------------------------------
# Expressions: JSON values with string templates, and HCL literals

Variables: TypeAlias = Mapping[str, Value] | None


def task_variables(env: Mapping[str, str]) -> dict[str, Value]:
    """Return the variables a Nomad client offers a task config for `env`.

    Each environment variable whose name is an identifier (``NOMAD_TASK_DIR``)
    is a variable, and ``env["NAME"]`` reaches any of them.
    """
    # NOTE: Nomad also offers node.*, attr.* and meta.*; the run command has
    # no node to take them from.
    variables = {
        name: string_value(text)
        for name, text in env.items()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
    }
    variables["env"] = make_map(
        {name: string_value(text) for name, text in env.items()}, STRING
    )
    return variables


def evaluate_json(node: Any, variables: Variables) -> Value:
    """Evaluate a JSON config value as HCL's JSON syntax does.

    Strings are templates, arrays are tuples and objects are objects.
    """
    if isinstance(node, str):
        return evaluate_template(node, variables)
    if isinstance(node, Mapping):
        attributes: dict[str, Value] = {}
        for key, element in node.items():
            name = _evaluate_key(str(key), variables)
            if name in attributes:
                raise _DiagnosticError(
                    "Duplicate object attribute",
                    f'An attribute named "{name}" was already defined.',
                )
            attributes[name] = evaluate_json(element, variables)
        return make_object(attributes)
    if isinstance(node, (list, tuple)):
        return make_tuple([evaluate_json(element, variables) for element in node])
    return from_python(node)


def _evaluate_key(key: str, variables: Variables) -> str:
    if "${" not in key and "%{" not in key:
        return _nfc(key)
    name = evaluate_template(key, variables)
    if name.type != STRING or name.is_null:
        raise _DiagnosticError(
            "Invalid object key", f"The key {key!r} must evaluate to a string."
        )
    return str(name.data)


def evaluate_template(text: str, variables: Variables) -> Value:
    """Evaluate an HCL string template: ``${...}`` interpolation and escapes.

    A template that is one interpolation and nothing else keeps the type of
    its expression, as in HCL. ``$${`` and ``%%{`` yield literal ``${`` and
    ``%{``. Template directives (``%{if}``, ``%{for}``) raise an error.
    """
    parts = _split_template(text)
    if len(parts) == 1 and isinstance(parts[0], _Interpolation):
        return _evaluate_expression(parts[0].source, variables)
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
        else:
            pieces.append(_interpolated_text(part.source, variables))
    return string_value("".join(pieces))


@dataclass(frozen=True)
class _Interpolation:
    source: str


def _split_template(text: str) -> list[str | _Interpolation]:
    parts: list[str | _Interpolation] = []
    literal: list[str] = []
    strip_next = False
    index = 0
    while index < len(text):
        if text.startswith(("$${", "%%{"), index):
            literal.append(text[index + 1 : index + 3])
            index += 3
        elif text.startswith("%{", index):
            raise _DiagnosticError(
                "Unsupported template directive",
                f"The template {text!r} uses %{{...}}, which the run command does "
                "not support; escape it as %%{ or compute the value in the job",
            )
        elif text.startswith("${", index):
            end = _closing_brace(text, index + 2)
            source = text[index + 2 : end]
            pending = "".join(literal)
            if source.startswith("~"):
                pending = pending.rstrip()
                source = source[1:]
            if pending:
                parts.append(pending.lstrip() if strip_next else pending)
            strip_next = source.endswith("~")
            source = source[:-1] if strip_next else source
            parts.append(_Interpolation(source.strip()))
            literal = []
            index = end + 1
        else:
            literal.append(text[index])
            index += 1
    tail = "".join(literal)
    if tail or not parts:
        parts.append(tail.lstrip() if strip_next else tail)
    return parts


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    in_string = False
    index = start
    while index < len(text):
        char = text[index]
        if in_string:
            if char == "\\":
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return index
            depth -= 1
        index += 1
    raise _DiagnosticError(
        "Unterminated template string",
        f"The interpolation in {text!r} has no closing brace.",
    )


def _interpolated_text(source: str, variables: Variables) -> str:
    value = _evaluate_expression(source, variables)
    if value.is_null:
        raise _DiagnosticError(
            "Invalid template interpolation value",
            f"The expression {source!r} result is null. Cannot include a null "
            "value in a string template.",
        )
    try:
        return str(convert(value, STRING).data)
    except ConversionError:
        raise _DiagnosticError(
            "Invalid template interpolation value",
            f"Cannot include the value of {source!r} in a string template: "
            "string required.",
        ) from None


_EXPRESSION_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
      | (?P<punct>[-!.\[\]()])
    )""",
    re.VERBOSE | re.DOTALL,
)


def _evaluate_expression(source: str, variables: Variables) -> Value:
    # The run command evaluates the expressions Nomad's task configs use:
    # variable references with attribute and index steps, literals and unary
    # operators. A hand-written parser covers them because python-hcl2 returns
    # interpolations only as unparsed text.
    tokens = _expression_tokens(source)
    evaluator = _ExpressionEvaluator(source, tokens, variables)
    value = evaluator.unary()
    if evaluator.position != len(tokens):
        raise _unsupported_expression(source)
    return value


def _expression_tokens(source: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    index = 0
    while source[index:].strip():
        match = _EXPRESSION_TOKEN.match(source, index)
        if match is None or match.lastgroup is None:
            raise _unsupported_expression(source)
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        index = match.end()
    return tokens


def _unsupported_expression(source: str) -> _DiagnosticError:
    return _DiagnosticError(
        "Unsupported expression",
        f"The run command cannot evaluate ${{{source}}}; it supports variable "
        'references such as NOMAD_TASK_DIR or env["NAME"], literals and '
        "unary minus, not operators or function calls",
    )


class _ExpressionEvaluator:
    def __init__(
        self, source: str, tokens: list[tuple[str, str]], variables: Variables
    ) -> None:
        self.source = source
        self.tokens = tokens
        self.variables = variables
        self.position = 0

    def peek(self) -> tuple[str, str]:
        if self.position < len(self.tokens):
            return self.tokens[self.position]
        return ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token[0] == "end":
            raise _unsupported_expression(self.source)
        self.position += 1
        return token

    def unary(self) -> Value:
        if self.peek() == ("punct", "-"):
            self.take()
            return _negate(self.unary(), self.source)
        if self.peek() == ("punct", "!"):
            self.take()
            operand = convert_or_fail(self.unary(), BOOL, self.source)
            return bool_value(not operand.data)
        return self.postfix(self.primary())

    def primary(self) -> Value:
        kind, text = self.take()
        if kind == "number":
            return number_value(Decimal(text))
        if kind == "string":
            return evaluate_template(
                process_escape_sequences(text[1:-1]), self.variables
            )
        if kind == "punct" and text == "(":
            value = self.unary()
            if self.take() != ("punct", ")"):
                raise _unsupported_expression(self.source)
            return value
        if kind != "name" or self.peek() == ("punct", "("):
            raise _unsupported_expression(self.source)
        if text in ("true", "false"):
            return bool_value(text == "true")
        if text == "null":
            return null(DYNAMIC)
        return _lookup_variable(text, self.variables)

    def postfix(self, value: Value) -> Value:
        while self.peek() in (("punct", "."), ("punct", "[")):
            _, opener = self.take()
            if opener == ".":
                kind, key = self.take()
                if kind not in ("name", "number"):
                    raise _unsupported_expression(self.source)
                value = _index(value, string_value(key))
            else:
                key_value = self.unary()
                if self.take() != ("punct", "]"):
                    raise _unsupported_expression(self.source)
                value = _index(value, key_value)
        return value


def convert_or_fail(value: Value, target: Type, source: str) -> Value:
    try:
        return convert(value, target)
    except ConversionError as err:
        raise _DiagnosticError(
            "Invalid operand", f"Unsuitable value for {source!r}: {err}."
        ) from None


def _negate(value: Value, source: str) -> Value:
    number = convert_or_fail(value, NUMBER, source)
    if number.is_null:
        return number
    assert isinstance(number.data, Decimal)
    # copy_negate is exact; unary minus would round to the decimal context.
    return Value(NUMBER, number.data.copy_negate())


def _lookup_variable(name: str, variables: Variables) -> Value:
    if variables is None:
        raise _DiagnosticError(
            "Variables not allowed",
            f'Variables may not be used here; found "{name}".',
        )
    if name not in variables:
        raise _DiagnosticError(
            "Unknown variable", f'There is no variable named "{name}".'
        )
    return variables[name]


def _index(collection: Value, key: Value) -> Value:
    if collection.is_null:
        raise _DiagnosticError(
            "Attempt to index null value", "This value is null, so it has no elements."
        )
    if isinstance(collection.type, (ListType, TupleType)):
        position = convert_or_fail(key, NUMBER, "index")
        elements = collection.elements()
        assert isinstance(position.data, Decimal)
        numerator, denominator = position.data.as_integer_ratio()
        if denominator != 1 or not 0 <= numerator < len(elements):
            raise _DiagnosticError(
                "Invalid index", "The given key does not identify an element."
            )
        return elements[numerator]
    if isinstance(collection.type, (MapType, ObjectType)):
        name = str(convert_or_fail(key, STRING, "key").data)
        if name not in collection.items():
            raise _DiagnosticError(
                "Missing map element"
                if isinstance(collection.type, MapType)
                else "Unsupported attribute",
                f'This value does not have an element named "{name}".',
            )
        return collection.items()[name]
    raise _DiagnosticError(
        "Invalid index", f"A {friendly_name(collection.type)} cannot be indexed."
    )


class _ExactFloatLiteral(FloatLiteral):
    # python-hcl2 converts float tokens with float(); reading the token text
    # as a Decimal keeps 0.1 and 1e400 exact, as HCL's 512-bit numbers do.
    @property
    def serialize_conversion(self) -> Callable[[Any], Any]:
        return Decimal


# Heredocs stay raw because python-hcl2's own conversion drops their final
# newline and adds escapes.
_HCL2_OPTIONS = hcl2.SerializationOptions(
    with_comments=False,
    preserve_heredocs=True,
    preserve_scientific_notation=False,
)
_HEREDOC = re.compile(
    r'"<<(-?)([A-Za-z][A-Za-z0-9._-]*)\r?\n(.*\n)[ \t]*\2"', re.DOTALL
)


def parse_hcl(text: str) -> dict[str, Any]:
    """Parse HCL native syntax with python-hcl2, reading numbers exactly.

    The result is python-hcl2's dict form: strings keep their quotes and
    escapes, expressions appear as ``${...}`` text, and blocks are lists of
    dicts marked with ``__is_block__``. Raises `lark.exceptions.LarkError`.
    """
    tree = hcl2.parses(text)
    for rule in find_all(tree, FloatLitRule):
        rule.children[0] = _ExactFloatLiteral(rule.token.value)
    result = hcl2.serialize(tree, serialization_options=_HCL2_OPTIONS)
    assert isinstance(result, dict)
    return result


_HCL2_MARKERS = frozenset({"__is_block__", "__start_line__", "__end_line__"})


def native_to_json(node: Any) -> Any:
    """Turn one python-hcl2 expression value into the JSON config form.

    Quoted strings lose their quotes and escapes but keep template syntax;
    other expressions become ``${...}`` templates; object keys lose quotes.
    """
    if isinstance(node, str):
        heredoc = _HEREDOC.fullmatch(node)
        if heredoc is not None:
            return _heredoc_text(heredoc.group(3), flush=heredoc.group(1) == "-")
        if node.startswith('"') and node.endswith('"') and len(node) >= 2:
            return process_escape_sequences(node[1:-1])
        if node.startswith("${") and node.endswith("}"):
            return node
        return "${" + node + "}"
    if isinstance(node, float):
        return Decimal(repr(node))
    if isinstance(node, list):
        return [native_to_json(element) for element in node]
    if isinstance(node, dict):
        return {
            unquote_key(key): native_to_json(element)
            for key, element in node.items()
            if key not in _HCL2_MARKERS
        }
    return node


def _heredoc_text(text: str, flush: bool) -> str:
    # A heredoc keeps its last newline and has no escape sequences; the
    # <<- form removes the smallest indentation from every line.
    if not flush:
        return text
    lines = text.split("\n")
    indents = [len(line) - len(line.lstrip(" \t")) for line in lines if line.strip()]
    cut = min(indents, default=0)
    return "\n".join(line[cut:] for line in lines)


def unquote_key(key: str) -> str:
    """Return an object key or block label from python-hcl2 without its quotes."""
    if key.startswith('"') and key.endswith('"') and len(key) >= 2:
        return process_escape_sequences(key[1:-1])
    return key


@functools.lru_cache(maxsize=256)
def evaluate_literal(expression: str) -> Value:
    """Evaluate an hclspec ``Literal`` expression, with no variables or functions.

    Raises `InvalidSpecError` when Nomad would reject it, e.g. an unquoted
    word, which HCL reads as a variable.
    """
    # python-hcl2 parses the expression so that literals accept the whole HCL
    # expression syntax for constants (objects, tuples, heredocs, escapes).
    if not expression.strip():
        raise InvalidSpecError("invalid literal '': Value must be specified")
    try:
        parsed = parse_hcl(f"literal = {expression}\n")
    except LarkError as err:
        raise InvalidSpecError(f"invalid literal {expression!r}: {err}") from None
    if set(parsed) != {"literal"}:
        raise InvalidSpecError(f"invalid literal {expression!r}: not one expression")
    try:
        return evaluate_json(native_to_json(parsed["literal"]), None)
    except _DiagnosticError as err:
        raise InvalidSpecError(f"invalid literal {expression!r}: {err}") from None


# ---------------------------------------------------------------------------
# The hcldec decoder


def decode(spec: Spec, config_map: Any, variables: Variables = None) -> Value:
    """Decode `config_map` against `spec` as a Nomad client does.

    `config_map` is the config in Nomad's JSON shape (blocks as lists of
    objects, or one object); numbers may be `int`, `float` or `Decimal`.
    `variables` is None for plugin configs, where any variable is an error,
    or the task's variables (see `task_variables`). Raises `DecodeError` with
    every diagnostic, and `InvalidSpecError` for a schema Nomad would reject.
    """
    spec = _with_names(spec, "")
    if not _is_body(config_map):
        raise DecodeError(
            [
                (
                    "Root value must be object; The root value in a JSON-based "
                    "configuration must be either a JSON object or a JSON array of "
                    "objects. Nomad sends null for a missing or empty config block, "
                    "so give at least one argument"
                )
            ]
        )
    decoder = _Decoder(variables)
    value = decoder.decode_body(config_map, spec, (), "")
    if decoder.diagnostics:
        raise DecodeError(decoder.diagnostics)
    return value


def _is_body(node: Any) -> bool:
    if isinstance(node, Mapping):
        return True
    return isinstance(node, (list, tuple)) and all(
        isinstance(element, Mapping) for element in node
    )


def _with_names(spec: Spec, implied: str) -> Spec:
    # Nomad lets a nested spec leave its name empty and uses the key of the
    # enclosing object attribute instead.
    if isinstance(spec, Object):
        return Object({key: _with_names(s, key) for key, s in spec.attributes.items()})
    if isinstance(spec, Array):
        return Array(tuple(_with_names(s, "") for s in spec.values))
    if isinstance(spec, Default):
        return Default(
            _with_names(spec.primary, implied), _with_names(spec.default, implied)
        )
    if isinstance(spec, Literal):
        return spec
    name = spec.name or implied
    if not name:
        raise InvalidSpecError(f"invalid spec {spec!r}: name is empty")
    if isinstance(spec, (Attr, BlockAttrs)):
        return _replace_name(spec, name)
    return _replace_name(spec, name, _with_names(spec.nested, ""))


def _replace_name(spec: Any, name: str, nested: Spec | None = None) -> Spec:
    if nested is None:
        return replace(spec, name=name)  # type: ignore[no-any-return]
    return replace(spec, name=name, nested=nested)  # type: ignore[no-any-return]


def implied_type(spec: Spec) -> Type:
    """Return the type hcldec gives `spec` when its value is absent."""
    if isinstance(spec, Object):
        return ObjectType.of({k: implied_type(s) for k, s in spec.attributes.items()})
    if isinstance(spec, Array):
        return TupleType(tuple(implied_type(s) for s in spec.values))
    if isinstance(spec, Attr):
        return parse_type(spec.type)
    if isinstance(spec, Block):
        return implied_type(spec.nested)
    if isinstance(spec, BlockList):
        return ListType(implied_type(spec.nested))
    if isinstance(spec, BlockSet):
        return SetType(implied_type(spec.nested))
    if isinstance(spec, BlockMap):
        ty = implied_type(spec.nested)
        for _ in spec.labels:
            ty = MapType(ty)
        return ty
    if isinstance(spec, BlockAttrs):
        return MapType(parse_type(spec.type))
    if isinstance(spec, Literal):
        return evaluate_literal(spec.value).type
    return implied_type(spec.primary)


@dataclass
class _Schema:
    attributes: dict[str, bool] = field(default_factory=dict)
    blocks: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _schema(spec: Spec, schema: _Schema) -> _Schema:
    if isinstance(spec, Object):
        for nested in spec.attributes.values():
            _schema(nested, schema)
    elif isinstance(spec, Array):
        for nested in spec.values:
            _schema(nested, schema)
    elif isinstance(spec, Default):
        _schema(spec.primary, schema)
        _schema(spec.default, schema)
    elif isinstance(spec, Attr):
        schema.attributes[spec.name] = schema.attributes.get(spec.name, False) or (
            spec.required
        )
    elif isinstance(spec, BlockMap):
        schema.blocks[spec.name] = spec.labels
    elif not isinstance(spec, Literal):
        schema.blocks[spec.name] = ()
    return schema


@dataclass
class _Block:
    type_name: str
    labels: tuple[str, ...]
    body: Any


@dataclass
class _Content:
    attributes: dict[str, Any] = field(default_factory=dict)
    blocks: list[_Block] = field(default_factory=list)


class _Decoder:
    def __init__(self, variables: Variables) -> None:
        self.variables = variables
        self.diagnostics: list[str] = []

    def report(self, where: str, summary: str, detail: str) -> None:
        prefix = f"{where}: " if where else ""
        self.diagnostics.append(f"{prefix}{summary}; {detail}")

    def decode_body(
        self, body: Any, spec: Spec, labels: tuple[str, ...], where: str
    ) -> Value:
        content = self.content(body, _schema(spec, _Schema()), where)
        return self.decode_spec(spec, content, labels, where)

    # -- HCL JSON body structure

    def content(self, body: Any, schema: _Schema, where: str) -> _Content:
        content = _Content()
        for name, node in self.properties(body, where):
            if name == "//":
                continue
            if name in schema.attributes:
                if name in content.attributes:
                    self.report(
                        where,
                        "Duplicate argument",
                        f'The argument "{name}" was already set.',
                    )
                content.attributes[name] = node
            elif name in schema.blocks:
                self.unpack_block(node, name, schema.blocks[name], (), content, where)
            else:
                self.report(
                    where,
                    "Extraneous JSON object property",
                    f'No argument or block type is named "{name}".'
                    + _suggestion(name, [*schema.attributes, *schema.blocks]),
                )
        for name, required in schema.attributes.items():
            if required and name not in content.attributes:
                self.report(
                    where,
                    "Missing required argument",
                    f'The argument "{name}" is required, but no definition was found.',
                )
        return content

    def properties(self, body: Any, where: str) -> list[tuple[str, Any]]:
        if body is None:
            return []
        if isinstance(body, Mapping):
            return [(str(k), v) for k, v in body.items()]
        if isinstance(body, (list, tuple)):
            found: list[tuple[str, Any]] = []
            for element in body:
                if isinstance(element, Mapping):
                    found.extend((str(k), v) for k, v in element.items())
                else:
                    self.report(
                        where,
                        "Incorrect JSON value type",
                        "A JSON object is required here, to define arguments and "
                        "child blocks.",
                    )
            return found
        self.report(
            where,
            "Incorrect JSON value type",
            "A JSON object is required here, setting the arguments for this block.",
        )
        return []

    def unpack_block(
        self,
        node: Any,
        type_name: str,
        labels_left: tuple[str, ...],
        labels: tuple[str, ...],
        content: _Content,
        where: str,
    ) -> None:
        if labels_left:
            properties = self.properties(node, _join(where, type_name))
            if not properties:
                self.report(
                    where,
                    "Missing block label",
                    "At least one object property is required, whose name represents "
                    f"the {type_name} block's {labels_left[0]}.",
                )
            for label, inner in properties:
                self.unpack_block(
                    inner, type_name, labels_left[1:], (*labels, label), content, where
                )
        elif node is None:
            return
        elif isinstance(node, Mapping):
            content.blocks.append(_Block(type_name, labels, node))
        elif isinstance(node, (list, tuple)):
            for element in node:
                content.blocks.append(_Block(type_name, labels, element))
        else:
            self.report(
                where,
                "Incorrect JSON value type",
                "Either a JSON object or a JSON array is required, representing the "
                f'contents of one or more "{type_name}" blocks.',
            )

    # -- specs

    def decode_spec(
        self, spec: Spec, content: _Content, labels: tuple[str, ...], where: str
    ) -> Value:
        if isinstance(spec, Object):
            return make_object(
                {
                    key: self.decode_spec(nested, content, labels, where)
                    for key, nested in spec.attributes.items()
                }
            )
        if isinstance(spec, Array):
            return make_tuple(
                [self.decode_spec(s, content, labels, where) for s in spec.values]
            )
        if isinstance(spec, Default):
            value = self.decode_spec(spec.primary, content, labels, where)
            if value.is_null:
                value = self.decode_spec(spec.default, content, labels, where)
            return value
        if isinstance(spec, Literal):
            return evaluate_literal(spec.value)
        if isinstance(spec, Attr):
            return self.decode_attr(spec, content, where)
        if isinstance(spec, Block):
            return self.decode_block(spec, content, where)
        if isinstance(spec, BlockAttrs):
            return self.decode_block_attrs(spec, content, where)
        if isinstance(spec, BlockMap):
            return self.decode_block_map(spec, content, where)
        return self.decode_block_collection(spec, content, where)

    def decode_attr(self, spec: Attr, content: _Content, where: str) -> Value:
        target = parse_type(spec.type)
        if spec.name not in content.attributes:
            return null(target)
        try:
            value = evaluate_json(content.attributes[spec.name], self.variables)
        except _DiagnosticError as err:
            self.report(_join(where, spec.name), *_split(err))
            return null(target)
        try:
            return convert(value, target)
        except ConversionError as err:
            self.report(
                where,
                "Incorrect attribute value type",
                f'Inappropriate value for attribute "{spec.name}": {err}.',
            )
            return null(target)

    def blocks_of(self, name: str, content: _Content) -> list[_Block]:
        return [block for block in content.blocks if block.type_name == name]

    def single_block(
        self, name: str, required: bool, content: _Content, where: str
    ) -> _Block | None:
        blocks = self.blocks_of(name, content)
        if len(blocks) > 1:
            self.report(
                where,
                f"Duplicate {name} block",
                f'Only one block of type "{name}" is allowed.',
            )
        if not blocks and required:
            self.report(
                where,
                f"Missing {name} block",
                f'A block of type "{name}" is required here.',
            )
        return blocks[0] if blocks else None

    def decode_block(self, spec: Block, content: _Content, where: str) -> Value:
        block = self.single_block(spec.name, spec.required, content, where)
        if block is None:
            return null(implied_type(spec.nested))
        return self.decode_body(
            block.body, spec.nested, block.labels, _join(where, spec.name)
        )

    def decode_block_attrs(
        self, spec: BlockAttrs, content: _Content, where: str
    ) -> Value:
        element_type = parse_type(spec.type)
        block = self.single_block(spec.name, spec.required, content, where)
        if block is None:
            return null(MapType(element_type))
        inner = _join(where, spec.name)
        if not isinstance(block.body, Mapping):
            self.report(
                inner,
                "Incorrect JSON value type",
                "A JSON object is required here, defining the attributes for this block.",
            )
            return null(MapType(element_type))
        values: dict[str, Value] = {}
        for name, node in block.body.items():
            if name != "//":
                values[str(name)] = self.block_attribute(
                    spec, name, node, element_type, inner
                )
        return self.collection(make_map, values, element_type, inner)

    def block_attribute(
        self, spec: BlockAttrs, name: str, node: Any, element_type: Type, where: str
    ) -> Value:
        try:
            return convert(evaluate_json(node, self.variables), element_type)
        except _DiagnosticError as err:
            self.report(_join(where, name), *_split(err))
        except ConversionError as err:
            self.report(
                where,
                "Invalid attribute value",
                f'Invalid value for attribute of "{spec.name}" block: {err}.',
            )
        return null(element_type)

    def decode_block_collection(
        self, spec: BlockList | BlockSet, content: _Content, where: str
    ) -> Value:
        inner = _join(where, spec.name)
        elements = [
            self.decode_body(block.body, spec.nested, block.labels, inner)
            for block in self.blocks_of(spec.name, content)
        ]
        if len(elements) < spec.min_items:
            self.report(
                where,
                f"Insufficient {spec.name} blocks",
                f'At least {spec.min_items} "{spec.name}" blocks are required.',
            )
        if spec.max_items > 0 and len(elements) > spec.max_items:
            self.report(
                where,
                f"Too many {spec.name} blocks",
                f'No more than {spec.max_items} "{spec.name}" blocks are allowed',
            )
        element_type = implied_type(spec.nested)
        if isinstance(spec, BlockSet):
            return self.collection(make_set, elements, element_type, inner)
        return self.collection(make_list, elements, element_type, inner)

    def decode_block_map(self, spec: BlockMap, content: _Content, where: str) -> Value:
        inner = _join(where, spec.name)
        tree: dict[str, Any] = {}
        for block in self.blocks_of(spec.name, content):
            target = tree
            for label in block.labels[:-1]:
                target = target.setdefault(label, {})
            key = block.labels[-1]
            value = self.decode_body(block.body, spec.nested, (), inner)
            if key in target:
                quoted = " ".join(f'"{label}"' for label in block.labels)
                self.report(
                    where,
                    f"Duplicate {spec.name} block",
                    f"A block for {spec.name} {quoted} was already defined. The "
                    f"{spec.name} labels must be unique.",
                )
                continue
            target[key] = value
        if not tree:
            return make_map({}, implied_type(spec.nested))
        return self.nested_map(tree, len(spec.labels), inner)

    def nested_map(self, tree: dict[str, Any], depth: int, where: str) -> Value:
        if depth > 1:
            tree = {
                key: self.nested_map(sub, depth - 1, where) for key, sub in tree.items()
            }
        values: dict[str, Value] = tree
        first = next(iter(values.values()))
        return self.collection(make_map, values, first.type, where)

    def collection(
        self,
        build: Callable[[Any, Type], Value],
        elements: Any,
        element_type: Type,
        where: str,
    ) -> Value:
        # go-cty requires every element of a list, set or map to have the same
        # type. hcldec builds these collections from the elements' own types,
        # which differ only when defaults yield objects of different shapes.
        values = list(elements.values()) if isinstance(elements, Mapping) else elements
        types = {value.type for value in values}
        if len(types) > 1:
            self.report(
                where,
                "Inconsistent element types",
                "The elements have different types, which go-cty cannot hold in one "
                "collection; give every block the same arguments",
            )
        elif types:
            element_type = types.pop()
        return build(elements, element_type)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _split(err: _DiagnosticError) -> tuple[str, str]:
    summary, _, detail = str(err).partition("; ")
    return summary, detail


def _suggestion(name: str, candidates: Sequence[str]) -> str:
    # hcl suggests a known name within edit distance 3 ("Did you mean ...?").
    best = min(candidates, key=lambda c: _edit_distance(name, c), default=None)
    if best is None or _edit_distance(name, best) >= 3:
        return ""
    return f' Did you mean "{best}"?'


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            cost = 0 if char_a == char_b else 1
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            )
        previous = current
    return previous[-1]
