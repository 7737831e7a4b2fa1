"""Nomad's hclspec schema language as plain Python data.

A driver declares its plugin and task configuration with these types. Nomad
turns them into hcldec specs (``hcl_spec.proto`` on the wire) and decodes the
user's ``config`` block against them. Field names follow the protobuf
messages, so the conversion to and from protobuf is one field per field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias


@dataclass(frozen=True)
class Attr:
    """An argument ``name = value`` converted to the HCL type expression `type`."""

    name: str
    type: str
    required: bool = False


@dataclass(frozen=True)
class Block:
    """Exactly one ``name { ... }`` block, decoded with `nested`; null when absent."""

    name: str
    nested: Spec
    required: bool = False


@dataclass(frozen=True)
class BlockList:
    """Zero or more ``name`` blocks as a list; 0 in `max_items` means no limit."""

    name: str
    nested: Spec
    min_items: int = 0
    max_items: int = 0


@dataclass(frozen=True)
class BlockSet:
    """Zero or more ``name`` blocks as a set; 0 in `max_items` means no limit."""

    name: str
    nested: Spec
    min_items: int = 0
    max_items: int = 0


@dataclass(frozen=True)
class BlockMap:
    """Labelled ``name "label" { ... }`` blocks as a map with one level per label."""

    name: str
    labels: tuple[str, ...]
    nested: Spec


@dataclass(frozen=True)
class BlockAttrs:
    """One ``name { ... }`` block whose arbitrary arguments form a map of `type`."""

    name: str
    type: str
    required: bool = False


@dataclass(frozen=True)
class Literal:
    """A constant given as an HCL expression; strings keep their quotes."""

    value: str


@dataclass(frozen=True)
class Default:
    """The value of `primary`, or of `default` when `primary` is null."""

    primary: Spec
    default: Spec


@dataclass(frozen=True)
class Object:
    """An object with one attribute per key of `attributes`."""

    attributes: Mapping[str, Spec] = field(default_factory=dict)


@dataclass(frozen=True)
class Array:
    """A tuple with one element per spec in `values`."""

    values: tuple[Spec, ...] = ()


Spec: TypeAlias = (
    Object
    | Array
    | Attr
    | Block
    | BlockAttrs
    | BlockList
    | BlockSet
    | BlockMap
    | Default
    | Literal
)


def spec_from_protojson(obj: Mapping[str, Any]) -> Spec:
    """Build a spec from the protobuf JSON form of ``hashicorp...hclspec.Spec``.

    Accepts the camelCase JSON names (``blockValue``, ``minItems``) and the
    original field names (``block_value``, ``min_items``). Raises `ValueError`
    when `obj` does not hold exactly one spec member.
    """
    if len(obj) != 1:
        raise ValueError(
            f"invalid spec {dict(obj)!r}: expected exactly one of "
            f"{', '.join(sorted(_MEMBER_PARSERS))}"
        )
    ((member, body),) = obj.items()
    parser = _MEMBER_PARSERS.get(_snake(member))
    if parser is None:
        raise ValueError(f"invalid spec member {member!r}: not an hclspec type")
    return parser(_snake_keys(body))


def _snake(name: str) -> str:
    if name == "Attr":
        return "attr"
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _snake_keys(body: Mapping[str, Any]) -> dict[str, Any]:
    return {_snake(key): value for key, value in body.items()}


def _count(body: Mapping[str, Any], key: str) -> int:
    # protojson writes uint64 fields as decimal strings.
    return int(body.get(key, 0))


def _parse_object(body: dict[str, Any]) -> Object:
    attributes = body.get("attributes", {})
    return Object({key: spec_from_protojson(s) for key, s in attributes.items()})


def _parse_array(body: dict[str, Any]) -> Array:
    return Array(tuple(spec_from_protojson(s) for s in body.get("values", [])))


def _parse_attr(body: dict[str, Any]) -> Attr:
    return Attr(body.get("name", ""), body.get("type", ""), body.get("required", False))


def _parse_block(body: dict[str, Any]) -> Block:
    nested = spec_from_protojson(body["nested"])
    return Block(body.get("name", ""), nested, body.get("required", False))


def _parse_block_attrs(body: dict[str, Any]) -> BlockAttrs:
    return BlockAttrs(
        body.get("name", ""), body.get("type", ""), body.get("required", False)
    )


def _parse_block_list(body: dict[str, Any]) -> BlockList:
    nested = spec_from_protojson(body["nested"])
    return BlockList(
        body.get("name", ""),
        nested,
        _count(body, "min_items"),
        _count(body, "max_items"),
    )


def _parse_block_set(body: dict[str, Any]) -> BlockSet:
    nested = spec_from_protojson(body["nested"])
    return BlockSet(
        body.get("name", ""),
        nested,
        _count(body, "min_items"),
        _count(body, "max_items"),
    )


def _parse_block_map(body: dict[str, Any]) -> BlockMap:
    nested = spec_from_protojson(body["nested"])
    return BlockMap(body.get("name", ""), tuple(body.get("labels", ())), nested)


def _parse_default(body: dict[str, Any]) -> Default:
    return Default(
        spec_from_protojson(body["primary"]), spec_from_protojson(body["default"])
    )


def _parse_literal(body: dict[str, Any]) -> Literal:
    return Literal(body.get("value", ""))


_MEMBER_PARSERS: dict[str, Callable[[dict[str, Any]], Spec]] = {
    "object": _parse_object,
    "array": _parse_array,
    "attr": _parse_attr,
    "block_value": _parse_block,
    "block_attrs": _parse_block_attrs,
    "block_list": _parse_block_list,
    "block_set": _parse_block_set,
    "block_map": _parse_block_map,
    "default": _parse_default,
    "literal": _parse_literal,
}
