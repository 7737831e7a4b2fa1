"""Config declarations: the schema sent to Nomad and the decoder of its bytes."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import msgpack
import pytest

from wasmtime_driver import config, display, hclspec
from wasmtime_driver.errors import ConfigError
from wasmtime_driver.settings import (
    CacheSettings,
    IOBuffer,
    MainCall,
    PluginConfig,
    TaskConfig,
    WasiPreopen,
)

# Bytes that real go-cty and hcl produced along Nomad's route, with the
# original Go driver's schemas.
VECTORS_PATH = Path(__file__).parent / "data" / "cty-msgpack.json"


def _vectors() -> dict:
    return json.loads(VECTORS_PATH.read_text())


def _original_spec(name: str) -> hclspec.Spec:
    return hclspec.spec_from_protojson(_vectors()["specs"][name]["protojson"])


def _without(spec: hclspec.Spec, path: tuple[str, ...]) -> hclspec.Spec:
    """Return `spec` with the attribute at `path` (through blocks) removed."""
    assert isinstance(spec, hclspec.Object)
    head, *rest = path
    attributes = dict(spec.attributes)
    if not rest:
        del attributes[head]
        return hclspec.Object(attributes)
    member = attributes[head]
    if isinstance(member, hclspec.Default):
        block = member.primary
        assert isinstance(block, hclspec.Block)
        nested = _without(block.nested, tuple(rest))
        member = hclspec.Default(
            hclspec.Block(block.name, nested, block.required), member.default
        )
    attributes[head] = member
    return hclspec.Object(attributes)


def test_task_spec_extends_original_with_wasi_only() -> None:
    ours = config.task_config_spec()
    assert _without(ours, ("wasi",)) == _original_spec("wasm-task-config")


def test_plugin_spec_extends_original_with_dir_and_isolation() -> None:
    ours = _without(config.plugin_config_spec(), ("isolation",))
    assert _without(ours, ("cache", "dir")) == _original_spec("wasm-plugin-config")


@pytest.mark.parametrize(
    "vector",
    [v for v in _vectors()["vectors"] if "hex" in v],
    ids=lambda v: v["name"],
)
def test_vector_bytes_decode(vector: dict) -> None:
    data = bytes.fromhex(vector["hex"])
    if vector["spec"] == "wasm-task-config":
        decoded = config.decode_task_config(data)
        assert decoded.module_path == vector["value"]["modulePath"]
        main = vector["value"]["main"]
        assert decoded.main.func_name == main["mainFuncName"]
        expected_args = [Decimal(str(a)) for a in main.get("args") or []]
        assert [Decimal(str(a)) for a in decoded.main.args] == expected_args
        assert decoded.io_buffer.enabled == vector["value"]["ioBuffer"]["enabled"]
    else:
        decoded_plugin = config.decode_plugin_config(data)
        cache = vector["value"]["cache"]
        assert decoded_plugin.cache.enabled == cache["enabled"]
        assert decoded_plugin.cache.type == cache["type"]
        assert decoded_plugin.cache.size == cache["size"]
        assert (
            decoded_plugin.cache.expiration.entry_ttl == cache["expiration"]["entryTTL"]
        )


def test_task_example_decodes() -> None:
    example = next(
        v for v in _vectors()["vectors"] if v["name"] == "task_config_example"
    )
    decoded = config.decode_task_config(bytes.fromhex(example["hex"]))
    assert decoded == TaskConfig(
        module_path="example/wasm-modules/sum.wasm",
        main=MainCall("sum", (123456, 678910)),
        io_buffer=IOBuffer(),
    )


def test_task_inexact_number_keeps_decimal_text() -> None:
    vector = next(
        v for v in _vectors()["vectors"] if v["name"] == "task_args_inexact_float"
    )
    decoded = config.decode_task_config(bytes.fromhex(vector["hex"]))
    assert decoded.main.args == ("0.1",)


def test_plugin_empty_bytes_give_defaults() -> None:
    assert config.decode_plugin_config(b"") == PluginConfig()


def test_plugin_empty_vector_gives_defaults() -> None:
    vector = next(
        v for v in _vectors()["vectors"] if v["name"] == "plugin_config_empty"
    )
    assert config.decode_plugin_config(bytes.fromhex(vector["hex"])) == PluginConfig()


def _plugin_bytes(cache: dict) -> bytes:
    full = {
        "enabled": True,
        "type": "lfu",
        "size": 5,
        "expiration": {"enabled": True, "entryTTL": 600},
        "preCache": {"enabled": False},
        "dir": None,
    }
    full.update(cache)
    return msgpack.packb({"cache": full})


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ({"type": "mru"}, r'invalid cache\.type "mru": expected one of lfu, lru, arc'),
        ({"size": 0}, r"invalid cache\.size 0: must be a whole number greater than 0"),
        ({"size": -3}, r"invalid cache\.size -3"),
        ({"size": 2.5}, r"invalid cache\.size 2\.5"),
        ({"size": "abc"}, r'invalid cache\.size "abc": expected a number'),
        (
            {"expiration": {"enabled": True, "entryTTL": 0}},
            r"invalid cache\.expiration\.entryTTL 0: .*cache\.expiration\.enabled",
        ),
        ({"enabled": "yes"}, r'invalid cache\.enabled "yes": expected a bool'),
        ({"dir": ""}, r'invalid cache\.dir "": must not be empty'),
        (
            {"dir": "relcache"},
            r'invalid cache\.dir "relcache": must be an absolute path',
        ),
    ],
    ids=[
        "type",
        "size-zero",
        "size-negative",
        "size-fraction",
        "size-text",
        "ttl",
        "bool",
        "dir",
        "dir-relative",
    ],
)
def test_plugin_invalid_values_name_key(cache: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.decode_plugin_config(_plugin_bytes(cache))


def test_plugin_isolation_defaults_to_thread() -> None:
    assert config.decode_plugin_config(_plugin_bytes({})).isolation == "thread"


def test_plugin_isolation_process_accepted() -> None:
    data = msgpack.packb({"cache": None, "isolation": "process"})
    assert config.decode_plugin_config(data).isolation == "process"


@pytest.mark.parametrize("value", ["container", "", "Process"])
def test_plugin_isolation_invalid_names_values(value: str) -> None:
    data = msgpack.packb({"cache": None, "isolation": value})
    message = rf'invalid isolation "{value}": expected one of thread, process'
    with pytest.raises(ConfigError, match=message):
        config.decode_plugin_config(data)


def test_plugin_ttl_ignored_when_expiration_disabled() -> None:
    data = _plugin_bytes({"expiration": {"enabled": False, "entryTTL": 0}})
    assert config.decode_plugin_config(data).cache.expiration.enabled is False


def test_plugin_numbers_as_strings() -> None:
    data = _plugin_bytes(
        {"size": "10", "expiration": {"enabled": True, "entryTTL": "0.5"}}
    )
    settings = config.decode_plugin_config(data).cache
    assert settings == CacheSettings(size=10, expiration=settings.expiration)
    assert settings.expiration.entry_ttl == 0.5


def test_plugin_garbage_bytes_rejected() -> None:
    with pytest.raises(ConfigError, match="failed to decode plugin config msgpack"):
        config.decode_plugin_config(b"\xc1")


def test_task_missing_module_path_rejected() -> None:
    with pytest.raises(ConfigError, match="missing modulePath: it is required"):
        config.decode_task_config(msgpack.packb({"main": None}))


def test_task_io_buffer_size_checked() -> None:
    data = msgpack.packb(
        {"modulePath": "m.wasm", "ioBuffer": {"enabled": True, "size": 0}}
    )
    with pytest.raises(ConfigError, match=r"invalid ioBuffer\.size 0"):
        config.decode_task_config(data)


def test_task_wasi_block_decodes() -> None:
    data = msgpack.packb(
        {
            "modulePath": "m.wasm",
            "wasi": {
                "args": ["-v", "x"],
                "preopen": [
                    {"hostPath": "local", "guestPath": "/data", "readOnly": True},
                    {"hostPath": "alloc/data", "guestPath": None, "readOnly": None},
                ],
            },
        }
    )
    wasi = config.decode_task_config(data).wasi
    assert wasi.args == ("-v", "x")
    assert wasi.preopens == (
        WasiPreopen("local", "/data", True),
        WasiPreopen("alloc/data", "alloc/data", False),
    )


def test_task_wasi_preopen_needs_host_path() -> None:
    data = msgpack.packb(
        {"modulePath": "m.wasm", "wasi": {"preopen": [{"guestPath": "/d"}]}}
    )
    with pytest.raises(ConfigError, match=r"missing wasi\.preopen\[0\]\.hostPath"):
        config.decode_task_config(data)


def _task_bytes(**blocks: object) -> bytes:
    return msgpack.packb({"modulePath": "m.wasm", **blocks})


def test_task_huge_exponent_stays_text() -> None:
    # int() of this value would take minutes; it must stay decimal text.
    data = _task_bytes(main={"args": ["1e999999999", "-1e311", "1e310"]})
    args = config.decode_task_config(data).main.args
    assert args[0] == "1e+999999999"
    assert args[1] == "-1e+311"
    assert args[2] == 10**310


def test_task_number_text_too_long_rejected() -> None:
    data = _task_bytes(main={"args": ["1" * 1001]})
    message = r"invalid main\.args\[0\] \"1{60}\.\.\.\" \(1001 characters\): number "
    with pytest.raises(ConfigError, match=message + "text is too long"):
        config.decode_task_config(data)


def test_task_number_text_at_limit_accepted() -> None:
    data = _task_bytes(main={"args": ["9" * 1000]})
    assert config.decode_task_config(data).main.args == ("9" * 1000,)


@pytest.mark.parametrize("text", [" 5 ", "1_000", "+1", ".5", "5.", "Infinity", "NaN"])
def test_task_lenient_number_text_rejected(text: str) -> None:
    data = _task_bytes(main={"args": [text]})
    with pytest.raises(ConfigError, match=r"invalid main\.args\[0\] .*: expected a"):
        config.decode_task_config(data)


@pytest.mark.parametrize(
    ("blocks", "key"),
    [
        ({"main": {"args": [math.inf]}}, r"main\.args\[0\] Infinity"),
        ({"ioBuffer": {"args": [-math.inf]}}, r"ioBuffer\.args\[0\] -Infinity"),
        ({"ioBuffer": {"size": math.nan}}, r"ioBuffer\.size NaN"),
    ],
    ids=["main-args", "io-args", "io-size"],
)
def test_task_non_finite_numbers_rejected(blocks: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid {key}: expected a finite number"):
        config.decode_task_config(_task_bytes(**blocks))


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ({"size": math.inf}, r"cache\.size Infinity: expected a finite number"),
        (
            {"expiration": {"enabled": True, "entryTTL": math.inf}},
            r"cache\.expiration\.entryTTL Infinity: expected a finite number",
        ),
        (
            {"expiration": {"enabled": True, "entryTTL": "1e400"}},
            r"cache\.expiration\.entryTTL 1e\+400: too large",
        ),
        ({"size": "1e999999999"}, r"cache\.size \"1e999999999\": must be at most"),
    ],
    ids=["size-inf", "ttl-inf", "ttl-huge", "size-huge"],
)
def test_plugin_unusable_numbers_rejected(cache: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid {message}"):
        config.decode_plugin_config(_plugin_bytes(cache))


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ({"main": "x"}, r'invalid main: expected a block, got "x"$'),
        ({"ioBuffer": [1, 2]}, r"invalid ioBuffer: expected a block, got \[1, 2\]$"),
        ({"wasi": True}, r"invalid wasi: expected a block, got true$"),
        (
            {"wasi": {"preopen": [{"hostPath": "a"}, 5]}},
            r"invalid wasi\.preopen\[1\]: expected a block, got 5$",
        ),
    ],
    ids=["main", "io-buffer", "wasi", "preopen"],
)
def test_task_block_type_message(blocks: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.decode_task_config(_task_bytes(**blocks))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (None, "null"),
        (True, "true"),
        (b"1", "<1 bytes of binary data>"),
        (msgpack.ExtType(5, b""), "<msgpack extension type 5>"),
        ('a"b', '"a\\"b"'),
        ([[[[1]]]], "[[[...]]]"),
        (list(range(10)), "[0, 1, 2, 3, ... (10 items)]"),
    ],
    ids=["nil", "bool", "bytes", "ext", "quote", "nested", "long-list"],
)
def test_show_value_json_like(raw: object, shown: str) -> None:
    assert display.show_value(raw) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0.1", "0.1"),
        ("1e999999999", "1e999999999"),
        (10**400, "1e+400"),
        (Decimal(10**39), "1e+39"),
        ("1" * 30, "1.1111111111111111e+29"),
        (18446744073709551616, "18446744073709551616"),
        (2.5, "2.5"),
        (math.nan, "NaN"),
        ("x", '"x"'),
    ],
    ids=repr,
)
def test_show_number_compact(value: object, shown: str) -> None:
    assert display.show_number(value) == shown  # type: ignore[arg-type]


def test_task_deep_nesting_reason() -> None:
    data = b"\x91" * 100_000 + b"\xc0"
    message = "failed to decode task config msgpack: values are nested too deeply"
    with pytest.raises(ConfigError, match=message):
        config.decode_task_config(data)


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ({"main": {"mainFuncName": ""}}, "remove the key to call handle_buffer"),
        (
            {"ioBuffer": {"IOBufFuncName": ""}},
            "remove the key to call get_io_buffer_ptr",
        ),
    ],
    ids=["main", "io-buffer"],
)
def test_task_empty_name_says_fix(blocks: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f'"": must not be empty \\({message}\\)'):
        config.decode_task_config(_task_bytes(**blocks))


def test_task_empty_module_path_says_fix() -> None:
    message = r'invalid modulePath "": must not be empty \(set it to the path of a'
    with pytest.raises(ConfigError, match=message):
        config.decode_task_config(msgpack.packb({"modulePath": ""}))


def test_task_wasi_args_reject_nul() -> None:
    data = msgpack.packb({"modulePath": "m.wasm", "wasi": {"args": ["ok", "a\x00b"]}})
    with pytest.raises(ConfigError, match=r"wasi\.args .*argument 2 contains a NUL"):
        config.decode_task_config(data)


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [("0e999999999", 0), ("0.0e400", 0), ("-0", "-0"), (-0.0, "-0"), (0, 0)],
    ids=[
        "zero-huge-exponent",
        "zero-fraction",
        "negative-zero-text",
        "negative-zero",
        "zero",
    ],
)
def test_task_zero_arguments_keep_sign(raw: object, decoded: object) -> None:
    data = msgpack.packb({"modulePath": "m.wasm", "main": {"args": [raw]}})
    assert config.decode_task_config(data).main.args == (decoded,)
