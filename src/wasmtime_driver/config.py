"""Plugin and task configuration: each key declared once.

A declaration gives a key's name, HCL type, default and check. The same
declarations produce the hclspec schema that Nomad decodes job and agent
config against (`plugin_config_spec`, `task_config_spec`) and the decoder for
the msgpack bytes Nomad then sends (`decode_plugin_config`,
`decode_task_config`), so the two cannot drift apart.

Nomad has already converted every value to the declared type before the driver
sees it, but a number may still arrive as an int, a float or a decimal string
("0.1" is not exactly a float64, so go-cty sends it as text), and an absent
attribute arrives as nil. The decoder applies the defaults itself, because
Nomad sends a block's default literal only when the whole block is absent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack

from . import hclspec
from .display import DECIMAL_TEXT, MAX_NUMBER_TEXT, show_number, show_value
from .errors import ConfigError
from .settings import (
    CACHE_TYPES,
    DEFAULT_IO_BUFFER_FUNC,
    DEFAULT_MAIN_FUNC,
    ISOLATION_MODES,
    CacheSettings,
    ConfigNumber,
    ExpirationSettings,
    IOBuffer,
    MainCall,
    PluginConfig,
    PreCacheSettings,
    TaskConfig,
    WasiPreopen,
    WasiSettings,
)

# A check returns a message that describes what is wrong with a value, or None.
Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Key:
    """One attribute: `name = value` inside a block."""

    name: str
    hcl_type: str
    default: Any = None  # None: no default in the schema
    required: bool = False
    check: Check | None = None


@dataclass(frozen=True)
class Section:
    """A block of keys, such as `cache { ... }`.

    `absent_keys` names the keys whose defaults make up the literal Nomad
    sends when the whole block is absent; None sends no literal, so an absent
    block arrives as nil. The original driver's literals list only some keys,
    and keeping them identical keeps the schema identical.
    """

    name: str
    members: tuple[Key | Section, ...]
    absent_keys: tuple[str, ...] | None = None
    repeated: bool = False


# A whole number whose decimal exponent is above this fits neither i64 nor a
# finite f64 (maximum about 1.8e308). It stays decimal text, because building
# a Python int costs time and memory that grow with the exponent.
_MAX_WHOLE_EXPONENT = 310
# Sizes are stored as Python ints; anything above the i64 maximum is a typo.
_MAX_SIZE = (1 << 63) - 1


# Checks


def _positive_whole(value: Any) -> str | None:
    if not isinstance(value, Decimal) or value != value.to_integral_value():
        return "must be a whole number greater than 0"
    if value <= 0:
        return "must be a whole number greater than 0"
    if value > _MAX_SIZE:
        return f"must be at most {_MAX_SIZE}"
    return None


def _cache_type(value: Any) -> str | None:
    if value in CACHE_TYPES:
        return None
    return f"expected one of {', '.join(CACHE_TYPES)}"


def _isolation(value: Any) -> str | None:
    if value in ISOLATION_MODES:
        return None
    return f"expected one of {', '.join(ISOLATION_MODES)}"


def _not_empty(fix: str) -> Check:
    """Return a check that rejects "" and names `fix`, the value to set instead."""

    def check(value: Any) -> str | None:
        return None if value else f"must not be empty ({fix})"

    return check


def _no_nul_characters(values: Any) -> str | None:
    # A WASI program receives its arguments as C strings, which end at the
    # first NUL, so "a\x00b" would silently arrive as "a".
    for index, value in enumerate(values):
        if "\x00" in value:
            return (
                f"argument {index + 1} contains a NUL character, which WASI cannot pass"
            )
    return None


def _absolute_dir(value: Any) -> str | None:
    # A relative path would depend on the directory the agent was started
    # from, which changes between a test run and a service manager.
    if not value:
        return "must not be empty (remove the key to use the default cache directory)"
    if not str(value).startswith("/"):
        return "must be an absolute path, such as /var/cache/nomad-wasmtime-driver"
    return None


# Declarations. Names, types and defaults are the original Go driver's, so
# that its agent configs and jobs work unchanged.

EXPIRATION = Section(
    "expiration",
    (
        Key("enabled", "bool", True),
        # Checked with `enabled` in decode_plugin_config: a TTL only
        # matters while expiration is on.
        Key("entryTTL", "number", 600),
    ),
    absent_keys=("enabled", "entryTTL"),
)

PRE_CACHE = Section(
    "preCache",
    (
        Key("enabled", "bool", False),
        Key("modulesDir", "string"),
    ),
    absent_keys=("enabled",),
)

CACHE = Section(
    "cache",
    (
        Key("enabled", "bool", True),
        Key("type", "string", "lfu", check=_cache_type),
        Key("size", "number", 5, check=_positive_whole),
        EXPIRATION,
        PRE_CACHE,
        Key("dir", "string", check=_absolute_dir),
    ),
    absent_keys=("enabled", "type", "size", "expiration", "preCache"),
)

PLUGIN_CONFIG = Section(
    "config", (CACHE, Key("isolation", "string", "thread", check=_isolation))
)

IO_BUFFER = Section(
    "ioBuffer",
    (
        Key("enabled", "bool", False),
        Key("size", "number", 4096, check=_positive_whole),
        Key("inputValue", "string"),
        Key(
            "IOBufFuncName",
            "string",
            DEFAULT_IO_BUFFER_FUNC,
            check=_not_empty(f"remove the key to call {DEFAULT_IO_BUFFER_FUNC}"),
        ),
        Key("args", "list(number)"),
    ),
    absent_keys=("enabled",),
)

MAIN = Section(
    "main",
    (
        Key(
            "mainFuncName",
            "string",
            DEFAULT_MAIN_FUNC,
            check=_not_empty(f"remove the key to call {DEFAULT_MAIN_FUNC}"),
        ),
        Key("args", "list(number)"),
    ),
    absent_keys=("mainFuncName",),
)

WASI_PREOPEN = Section(
    "preopen",
    (
        Key(
            "hostPath",
            "string",
            required=True,
            check=_not_empty(
                'set it to a directory of the allocation, such as "local"'
            ),
        ),
        Key("guestPath", "string"),
        Key("readOnly", "bool"),
    ),
    repeated=True,
)

WASI = Section(
    "wasi", (Key("args", "list(string)", check=_no_nul_characters), WASI_PREOPEN)
)

TASK_CONFIG = Section(
    "config",
    (
        Key(
            "modulePath",
            "string",
            required=True,
            check=_not_empty("set it to the path of a .wasm file"),
        ),
        IO_BUFFER,
        MAIN,
        WASI,
    ),
)


# Schema


def plugin_config_spec() -> hclspec.Spec:
    """Return the hclspec schema of the agent's `plugin "wasmtime-driver"` config."""
    return _object_spec(PLUGIN_CONFIG)


def task_config_spec() -> hclspec.Spec:
    """Return the hclspec schema of a task's `config { ... }` block."""
    return _object_spec(TASK_CONFIG)


def _object_spec(section: Section) -> hclspec.Object:
    return hclspec.Object({m.name: _member_spec(m) for m in section.members})


def _member_spec(member: Key | Section) -> hclspec.Spec:
    if isinstance(member, Key):
        attr = hclspec.Attr(member.name, member.hcl_type, member.required)
        if member.default is None:
            return attr
        return hclspec.Default(attr, hclspec.Literal(_hcl_literal(member.default)))

    nested = _object_spec(member)
    if member.repeated:
        return hclspec.BlockList(member.name, nested)
    block = hclspec.Block(member.name, nested)
    if member.absent_keys is None:
        return block
    return hclspec.Default(block, hclspec.Literal(_absent_literal(member)))


def _absent_literal(section: Section) -> str:
    members = {m.name: m for m in section.members}
    parts = []
    for name in section.absent_keys or ():
        member = members[name]
        if isinstance(member, Key):
            parts.append(f"{name} = {_hcl_literal(member.default)}")
        else:
            parts.append(f"{name} = {_absent_literal(member)}")
    return "{ " + ", ".join(parts) + " }"


def _hcl_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"no HCL literal for default {value!r}")


# Decoding


def decode_plugin_config(data: bytes) -> PluginConfig:
    """Decode SetConfig's msgpack bytes; empty bytes mean every default."""
    values = _decode_section(PLUGIN_CONFIG, _unpack(data, "plugin config"), "")
    cache = values["cache"]
    expiration = cache["expiration"]
    pre_cache = cache["preCache"]
    modules_dir = pre_cache["modulesDir"]
    cache_dir = cache["dir"]
    _check_entry_ttl(expiration["entryTTL"], enabled=expiration["enabled"])
    return PluginConfig(
        cache=CacheSettings(
            enabled=cache["enabled"],
            type=cache["type"],
            size=int(cache["size"]),
            expiration=ExpirationSettings(
                enabled=expiration["enabled"],
                entry_ttl=float(expiration["entryTTL"]),
            ),
            pre_cache=PreCacheSettings(
                enabled=pre_cache["enabled"],
                modules_dir=Path(modules_dir) if modules_dir else None,
            ),
            dir=Path(cache_dir) if cache_dir else None,
        ),
        isolation=values["isolation"],
    )


def _check_entry_ttl(ttl: Decimal, *, enabled: bool) -> None:
    shown = show_number(ttl)
    if not math.isfinite(float(ttl)):
        raise ConfigError(
            f"invalid cache.expiration.entryTTL {shown}: too large; set it to a "
            "number of seconds"
        )
    if enabled and ttl <= 0:
        raise ConfigError(
            f"invalid cache.expiration.entryTTL {shown}: must be a number of "
            "seconds greater than 0, or set cache.expiration.enabled = false"
        )


def decode_task_config(data: bytes) -> TaskConfig:
    """Decode a task's msgpack_driver_config bytes into a TaskConfig."""
    values = _decode_section(TASK_CONFIG, _unpack(data, "task config"), "")
    main = values["main"]
    io_buffer = values["ioBuffer"]
    wasi = values["wasi"]
    return TaskConfig(
        module_path=values["modulePath"],
        main=MainCall(
            func_name=main["mainFuncName"],
            args=tuple(_config_number(n) for n in main["args"] or ()),
        ),
        io_buffer=IOBuffer(
            enabled=io_buffer["enabled"],
            size=int(io_buffer["size"]),
            input_value=io_buffer["inputValue"] or "",
            func_name=io_buffer["IOBufFuncName"],
            args=tuple(_config_number(n) for n in io_buffer["args"] or ()),
        ),
        wasi=WasiSettings(
            args=tuple(wasi["args"] or ()),
            preopens=tuple(_wasi_preopen(p) for p in wasi["preopen"]),
        ),
    )


def _wasi_preopen(values: Mapping[str, Any]) -> WasiPreopen:
    host_path = values["hostPath"]
    return WasiPreopen(
        host_path=host_path,
        guest_path=values["guestPath"] or host_path,
        read_only=bool(values["readOnly"]),
    )


def _config_number(value: Decimal) -> ConfigNumber:
    # Whole numbers become ints and the rest keep their exact decimal text,
    # so that the runtime converts them by the called function's signature.
    # A whole number too large for any wasm type stays text: the runtime
    # rejects it without building a huge int.
    if value.is_zero():
        # "0e999999999" is still zero, and a negative zero must stay -0.0
        # for a float parameter, which the int 0 would lose.
        return "-0" if value.is_signed() else 0
    if value.adjusted() <= _MAX_WHOLE_EXPONENT and value == value.to_integral_value():
        return int(value)
    # Lowercase "e" as in Python's float text: Decimal writes "1E+999999999".
    return str(value).replace("E", "e")


def _unpack(data: bytes, what: str) -> Mapping[str, Any]:
    if not data:
        return {}
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError) as err:
        raise ConfigError(
            f"failed to decode {what} msgpack: {_decode_reason(err)}"
        ) from err
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"invalid {what}: expected a map, got {show_value(value)}")
    return value


def _decode_reason(err: Exception) -> str:
    # msgpack raises StackError without a message when nesting is deeper than
    # its C unpacker's stack.
    if isinstance(err, msgpack.StackError):
        return "values are nested too deeply"
    return str(err) or type(err).__name__


def _decode_section(section: Section, data: Any, path: str) -> dict[str, Any]:
    """Decode the block at `path` ("" for the whole config, else "main" etc.)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"invalid {path or section.name}: expected a block, got {show_value(data)}"
        )

    values: dict[str, Any] = {}
    for member in section.members:
        member_path = f"{path}.{member.name}" if path else member.name
        raw = data.get(member.name)
        if isinstance(member, Key):
            values[member.name] = _decode_key(member, raw, member_path)
        elif member.repeated:
            values[member.name] = [
                _decode_section(member, item, f"{member_path}[{index}]")
                for index, item in enumerate(_as_list(raw, member_path))
            ]
        else:
            values[member.name] = _decode_section(member, raw, member_path)
    return values


def _as_list(raw: Any, path: str) -> list[Any]:
    if raw is None:
        return []
    if isinstance(raw, list):
        return raw
    return [raw]


def _decode_key(key: Key, raw: Any, path: str) -> Any:
    if raw is None:
        if key.required:
            raise ConfigError(f"missing {path}: it is required")
        return _default_value(key)

    value = _convert(key.hcl_type, raw, path)
    if key.check is not None:
        problem = key.check(value)
        if problem is not None:
            raise ConfigError(f"invalid {path} {show_value(raw)}: {problem}")
    return value


def _default_value(key: Key) -> Any:
    if key.hcl_type == "number" and key.default is not None:
        return Decimal(key.default)
    return key.default


def _convert(hcl_type: str, raw: Any, path: str) -> Any:
    if hcl_type == "bool" and isinstance(raw, bool):
        return raw
    if hcl_type == "string" and isinstance(raw, str):
        return raw
    if hcl_type == "number":
        return _to_decimal(raw, path)
    if hcl_type.startswith("list(") and isinstance(raw, list):
        item_type = hcl_type[len("list(") : -1]
        return [_convert(item_type, item, f"{path}[{i}]") for i, item in enumerate(raw)]
    raise ConfigError(f"invalid {path} {show_value(raw)}: expected a {hcl_type}")


def _to_decimal(raw: Any, path: str) -> Decimal:
    if isinstance(raw, float):
        # go-cty encodes infinities as msgpack floats; no key accepts them.
        if not math.isfinite(raw):
            raise ConfigError(
                f"invalid {path} {show_value(raw)}: expected a finite number"
            )
        # A float64 from go-cty is its exact binary value (Nomad up to 1.9.4
        # sends 2**63 that way), which Decimal(float) keeps and repr would
        # round to 17 digits.
        return Decimal(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return Decimal(raw)
    if isinstance(raw, str):
        return _parse_decimal_text(raw, path)
    raise ConfigError(f"invalid {path} {show_value(raw)}: expected a number")


def _parse_decimal_text(text: str, path: str) -> Decimal:
    if len(text) > MAX_NUMBER_TEXT:
        raise ConfigError(
            f"invalid {path} {show_value(text)}: number text is too long "
            f"({len(text)} characters, at most {MAX_NUMBER_TEXT})"
        )
    if DECIMAL_TEXT.fullmatch(text) is None:
        raise ConfigError(
            f"invalid {path} {show_value(text)}: expected a number such as "
            '"12", "-0.5" or "1e-3"'
        )
    return Decimal(text)
