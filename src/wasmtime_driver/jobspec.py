"""Read a Nomad job file (HCL2) into the few fields the run command needs.

The parser is python-hcl2. Each task's ``config`` block becomes the map a
Nomad client receives, in the shape Nomad's HCL2 job parser (jobspec2) gives
it. Blocks and object-valued arguments inside ``config`` both become a list of
objects. Strings keep their ``${...}`` templates for the client to evaluate,
and numbers stay exact (`int` or `decimal.Decimal`).

NOTE: a real Nomad carries job numbers through its HTTP API as float64 or
int64, so a number with more than 15 significant digits can reach the client
rounded there, while this parser keeps it exact.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from lark.exceptions import LarkError, UnexpectedInput, UnexpectedToken

from wasmtime_driver.errors import ConfigError
from wasmtime_driver.hclexpr import native_to_json, parse_hcl, unquote_key

logger = logging.getLogger(__name__)

DEFAULT_KILL_TIMEOUT_S = 5.0
DEFAULT_CPU_MHZ = 100
DEFAULT_MEMORY_MB = 300


class JobFileError(ConfigError):
    """A job file that cannot be read, parsed or understood."""


@dataclass(frozen=True)
class Resources:
    """A task's ``resources`` block; `memory_max_mb` 0 means no separate maximum."""

    cpu_mhz: int = DEFAULT_CPU_MHZ
    memory_mb: int = DEFAULT_MEMORY_MB
    memory_max_mb: int = 0


@dataclass(frozen=True)
class Task:
    """One ``task`` block.

    `config` is the config map in Nomad's JSON shape, or None when the block
    is missing or empty (Nomad sends null then, which hcldec rejects). `env`
    values are unevaluated templates.
    """

    name: str
    driver: str
    config: dict[str, Any] | None
    env: dict[str, str] = field(default_factory=dict)
    kill_timeout_s: float = DEFAULT_KILL_TIMEOUT_S
    kill_signal: str = ""
    resources: Resources = Resources()
    logs_disabled: bool = False
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskGroup:
    name: str
    tasks: tuple[Task, ...]
    count: int = 1


@dataclass(frozen=True)
class Job:
    """One ``job`` block; `name` defaults to `id`, the block's label."""

    id: str
    name: str
    type: str
    datacenters: tuple[str, ...]
    groups: tuple[TaskGroup, ...]


def load_job(path: str | Path) -> Job:
    """Read and parse the job file at `path`; raises `JobFileError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise JobFileError(f"failed to read job file {str(path)!r}: {err}") from err
    return parse_job(text, str(path))


def parse_job(text: str, filename: str = "<job>") -> Job:
    """Parse job file text; `filename` names the source in errors."""
    body = _parse(text, filename)
    jobs = body.get("job")
    if not isinstance(jobs, list) or len(jobs) != 1:
        raise JobFileError(f"{filename}: expected exactly one job block")
    job_id, job_body = _labelled(jobs[0], "job", filename)
    groups = tuple(
        _group(group, filename) for group in _blocks(job_body, "group", filename)
    )
    if not groups:
        raise JobFileError(f"{filename}: job {job_id!r} has no group block")
    datacenters = _attribute(job_body, "datacenters", ["*"], list, filename)
    return Job(
        id=job_id,
        name=_attribute(job_body, "name", job_id, str, filename),
        type=_attribute(job_body, "type", "service", str, filename),
        datacenters=tuple(str(dc) for dc in datacenters),
        groups=groups,
    )


def tasks_for_driver(job: Job, driver: str) -> list[tuple[TaskGroup, Task]]:
    """Return every task of `job` whose ``driver`` is `driver`, with its group."""
    return [
        (group, task)
        for group in job.groups
        for task in group.tasks
        if task.driver == driver
    ]


def parse_config_body(text: str, filename: str = "<config>") -> dict[str, Any]:
    """Parse the inside of a ``config { ... }`` block into Nomad's JSON shape."""
    return shape_config(_parse(text, filename))


def shape_config(body: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a python-hcl2 body into the config map jobspec2 produces.

    Blocks become lists of objects (labels become nested one-element lists),
    and an argument whose value is an object literal becomes a list holding
    that object. Objects nested inside a value are left as they are.
    """
    shaped: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("__"):
            continue
        if _is_block_list(value):
            shaped[key] = [_shape_block(block) for block in value]
        elif isinstance(value, dict):
            shaped[key] = [native_to_json(value)]
        else:
            shaped[key] = native_to_json(value)
    return shaped


def _shape_block(block: Mapping[str, Any]) -> dict[str, Any]:
    if block.get("__is_block__"):
        return shape_config(block)
    ((label, inner),) = block.items()
    return {unquote_key(label): [_shape_block(inner)]}


def _is_block(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    if node.get("__is_block__"):
        return True
    # A labelled block appears as {'"label"': {...}} around the block body.
    if len(node) != 1:
        return False
    ((label, inner),) = node.items()
    return label.startswith('"') and _is_block(inner)


def _is_block_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(map(_is_block, value))


def _parse(text: str, filename: str) -> dict[str, Any]:
    try:
        return parse_hcl(text)
    except LarkError as err:
        raise JobFileError(f"failed to parse {_syntax_error(err, filename)}") from err


def _syntax_error(err: LarkError, filename: str) -> str:
    # lark's own message lists every grammar token it expected; the position
    # and the offending text are what a reader of the job file needs.
    if not isinstance(err, UnexpectedInput):
        return f"{filename}: {err}"
    where = f"{filename}:{err.line}:{err.column}"
    if isinstance(err, UnexpectedToken):
        if err.token.type == "$END":
            return f"{where}: unexpected end of file, check for a missing brace"
        return f"{where}: unexpected {str(err.token).strip()!r}"
    return f"{where}: invalid HCL syntax"


def _blocks(body: Mapping[str, Any], name: str, filename: str) -> list[Any]:
    blocks = body.get(name, [])
    if not _is_block_list(blocks) and blocks != []:
        raise JobFileError(
            f"{filename}: {name} must be a block, as in {name} {{ ... }}"
        )
    return list(blocks)


def _labelled(block: Any, kind: str, filename: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(block, dict) or len(block) != 1:
        raise JobFileError(
            f'{filename}: a {kind} block needs one label, as in {kind} "name"'
        )
    ((label, inner),) = block.items()
    if not isinstance(inner, dict) or not inner.get("__is_block__"):
        raise JobFileError(
            f'{filename}: a {kind} block needs one label, as in {kind} "name"'
        )
    return unquote_key(label), inner


def _attribute(
    body: Mapping[str, Any], name: str, default: Any, kind: type, filename: str
) -> Any:
    if name not in body:
        return default
    value = native_to_json(body[name])
    if isinstance(value, str) and "${" in value:
        raise JobFileError(
            f"{filename}: {name} = {value!r} uses interpolation, which the run "
            "command supports only inside config; write the value out"
        )
    if kind is int and isinstance(value, Decimal):
        numerator, denominator = value.as_integer_ratio()
        value = numerator if denominator == 1 else value
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise JobFileError(
            f"{filename}: {name} = {value!r} is invalid: expected {kind.__name__}"
        )
    return value


def _group(block: Any, filename: str) -> TaskGroup:
    name, body = _labelled(block, "group", filename)
    tasks = tuple(_task(task, filename) for task in _blocks(body, "task", filename))
    if not tasks:
        raise JobFileError(f"{filename}: group {name!r} has no task block")
    return TaskGroup(name, tasks, _attribute(body, "count", 1, int, filename))


def _task(block: Any, filename: str) -> Task:
    name, body = _labelled(block, "task", filename)
    where = f"{filename}: task {name!r}"
    driver = _attribute(body, "driver", None, str, where)
    if driver is None:
        raise JobFileError(f"{where}: driver is missing")
    kill_timeout = _attribute(body, "kill_timeout", "5s", str, where)
    return Task(
        name=name,
        driver=driver,
        config=_config(body, where),
        env=_string_map(body, "env", where),
        kill_timeout_s=parse_duration(kill_timeout, f"{where}: kill_timeout"),
        kill_signal=_attribute(body, "kill_signal", "", str, where),
        resources=_resources(body, where),
        logs_disabled=_logs_disabled(body, where),
        meta=_string_map(body, "meta", where),
    )


def _config(body: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    blocks = _blocks(body, "config", where)
    if len(blocks) > 1:
        raise JobFileError(f"{where}: only one config block is allowed")
    if not blocks:
        return None
    config = shape_config(blocks[0])
    # Nomad's server replaces an empty config map with null.
    return config or None


def _single_block(body: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    blocks = _blocks(body, name, where)
    if len(blocks) > 1:
        raise JobFileError(f"{where}: only one {name} block is allowed")
    return dict(blocks[0]) if blocks else {}


def _string_map(body: Mapping[str, Any], name: str, where: str) -> dict[str, str]:
    # Nomad accepts both env { ... } blocks and env = { ... } arguments.
    raw = body.get(name)
    if isinstance(raw, dict):
        entries = raw
    else:
        entries = {}
        for block in _blocks(body, name, where):
            entries.update(block)
    result: dict[str, str] = {}
    for key, value in entries.items():
        if key.startswith("__"):
            continue
        text = native_to_json(value)
        if isinstance(text, (int, Decimal)) and not isinstance(text, bool):
            text = str(text)
        if not isinstance(text, str):
            raise JobFileError(
                f"{where}: {name}.{key} = {text!r} is invalid: expected string"
            )
        result[unquote_key(key)] = text
    return result


def _resources(body: Mapping[str, Any], where: str) -> Resources:
    block = _single_block(body, "resources", where)
    inner = f"{where}: resources"
    return Resources(
        cpu_mhz=_attribute(block, "cpu", DEFAULT_CPU_MHZ, int, inner),
        memory_mb=_attribute(block, "memory", DEFAULT_MEMORY_MB, int, inner),
        memory_max_mb=_attribute(block, "memory_max", 0, int, inner),
    )


def _logs_disabled(body: Mapping[str, Any], where: str) -> bool:
    block = _single_block(body, "logs", where)
    disabled = _attribute(block, "disabled", False, bool, f"{where}: logs")
    return bool(disabled)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str, field_name: str = "duration") -> float:
    """Parse a Go duration such as ``10s``, ``1m30s`` or ``250ms`` into seconds."""
    body = text[1:] if text[:1] in "+-" else text
    parts = list(_DURATION_PART.finditer(body))
    if text in ("0", "+0", "-0"):
        return 0.0
    if not parts or "".join(p.group(0) for p in parts) != body:
        raise JobFileError(
            f'{field_name}: invalid duration {text!r}: use a number and unit such as "10s", '
            '"1m30s" or "250ms"'
        )
    seconds = sum(float(p.group(1)) * _DURATION_UNITS_S[p.group(2)] for p in parts)
    return -seconds if text.startswith("-") else seconds
