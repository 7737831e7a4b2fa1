"""HCL expressions: string templates, hclspec literals and HCL native syntax.

`evaluate_json` evaluates a config value in HCL's JSON syntax, where strings
are templates with ``${...}`` interpolation over the variables that
`task_variables` returns. `evaluate_literal` evaluates an hclspec ``Literal``.
`parse_hcl` parses HCL native syntax with python-hcl2 but reads numbers
exactly, and `native_to_json` turns its result into the JSON config form.
Evaluation errors are `_DiagnosticError`, whose text is hcldec's
"Summary; Detail" diagnostic.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

import hcl2
from hcl2.rules.literal_rules import FloatLitRule
from hcl2.rules.tokens import FloatLiteral
from hcl2.utils import process_escape_sequences
from hcl2.walk import find_all
from lark.exceptions import LarkError

from wasmtime_driver.ctytypes import (
    BOOL,
    DYNAMIC,
    NUMBER,
    STRING,
    InvalidSpecError,
    ListType,
    MapType,
    ObjectType,
    TupleType,
    Type,
    friendly_name,
)
from wasmtime_driver.ctyvalue import (
    ConversionError,
    Value,
    _nfc,
    bool_value,
    convert,
    from_python,
    make_map,
    make_object,
    make_tuple,
    null,
    number_value,
    string_value,
)

# ---------------------------------------------------------------------------
# Diagnostics


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
