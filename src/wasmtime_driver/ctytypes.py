"""cty types and HCL type expressions, as go-cty and hashicorp/hcl v2 define them.

`Type` is the union of `PrimitiveType`, `ListType`, `SetType`, `MapType`,
`ObjectType` and `TupleType`. `type_to_json` returns go-cty's JSON form of a
type and `friendly_name` its wording in messages. `parse_type` parses an HCL
type expression such as ``list(number)`` and raises `InvalidSpecError` for one
that Nomad would reject.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

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
