"""Decode a Nomad config map against an hclspec the way a Nomad client does.

Nomad's client JSON-encodes a task's ``config`` map, parses it with HCL's JSON
syntax and decodes it with ``hcldec`` (hashicorp/hcl v2) into a go-cty value.
This module repeats that step in Python. `decode` returns a `Value`: a cty
value that carries its own concrete type, ready for
`wasmtime_driver.ctymsgpack.marshal`. `to_python` turns a `Value` into plain
Python data (numbers become `int` when integral, else `decimal.Decimal`).

Numbers are `decimal.Decimal` throughout, so no value passes through a float.
Error messages repeat hcldec's diagnostics ("Summary; Detail").

This module contains the hcldec spec decoder. It builds on `ctytypes` (cty
types and HCL type expressions), `ctyvalue` (cty values and conversion) and
`hclexpr` (templates, literals and `parse_hcl`), and re-exports the names of
those modules that its existing importers use (see `__all__`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from wasmtime_driver.ctytypes import (
    BOOL,
    NUMBER,
    STRING,
    InvalidSpecError,
    ListType,
    MapType,
    ObjectType,
    SetType,
    TupleType,
    Type,
    parse_type,
    type_to_json,
)
from wasmtime_driver.ctyvalue import (
    ConversionError,
    Value,
    bool_value,
    convert,
    from_python,
    make_list,
    make_map,
    make_object,
    make_set,
    make_tuple,
    null,
    number_value,
    string_value,
    to_python,
)
from wasmtime_driver.errors import ConfigError
from wasmtime_driver.hclexpr import (
    Variables,
    _DiagnosticError,
    evaluate_json,
    evaluate_literal,
    native_to_json,
    parse_hcl,
    task_variables,
    unquote_key,
)
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

# The decoder's own names (`DecodeError`, `decode`, `implied_type`) and the
# names re-exported for the modules and tests that import them from here.
__all__ = [
    "BOOL",
    "NUMBER",
    "STRING",
    "DecodeError",
    "InvalidSpecError",
    "MapType",
    "ObjectType",
    "Type",
    "Value",
    "Variables",
    "bool_value",
    "decode",
    "evaluate_literal",
    "from_python",
    "implied_type",
    "make_list",
    "make_map",
    "make_object",
    "make_set",
    "make_tuple",
    "native_to_json",
    "null",
    "number_value",
    "parse_hcl",
    "parse_type",
    "string_value",
    "task_variables",
    "to_python",
    "type_to_json",
    "unquote_key",
]

# ---------------------------------------------------------------------------
# Diagnostics


class DecodeError(ConfigError):
    """A config that hcldec rejects; `diagnostics` lists each message."""

    def __init__(self, diagnostics: Sequence[str]) -> None:
        super().__init__("\n".join(diagnostics))
        self.diagnostics = list(diagnostics)


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
                    "objects."
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
