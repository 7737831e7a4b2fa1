"""Conformance against the libraries a Nomad client is built from.

tests/conformance/run.sh builds a Go client from Debian's packages of
HashiCorp's go-plugin (1.0.1), grpc-go, go-cty (1.12.1) and hcl/v2 (2.14),
with stubs generated from this repository's .proto files. The client launches
build/wasmtime-driver as Nomad does, runs the scenarios and writes a report;
these tests read the report. The config bytes go-cty produced are then checked
against this package's own hcldec and ctymsgpack, and decoded by the plugin's
config module.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import wasmtime

REPO = Path(__file__).resolve().parents[1]
RUN_SH = REPO / "tests" / "conformance" / "run.sh"
PLUGIN = REPO / "build" / "wasmtime-driver"
JOB_DIR = REPO / "example" / "job"
GO_PLUGIN_SOURCE = Path("/usr/share/gocode/src/github.com/hashicorp/go-plugin")

DEBIAN_PACKAGES = (
    "golang-go golang-github-hashicorp-go-plugin-dev golang-google-grpc-dev "
    "golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev "
    "golang-github-zclconf-go-cty-dev golang-github-hashicorp-hcl-v2-dev "
    "protoc-gen-go protoc-gen-go-grpc protobuf-compiler"
)

# A module whose exported function never returns, for StopTask.
SPIN_WAT = '(module (func (export "spin") (loop $spin (br $spin))))'

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class CtyCase:
    """A config map to encode with go-cty and with this package."""

    name: str
    schema: str  # "task" or "plugin"
    config: str  # JSON text, so numbers keep their decimal form
    # Checks on the value the plugin decodes from go-cty's bytes; None for
    # configs that hcldec rejects.
    decoded: Callable[[Any], bool] | None
    error: str | None = None  # expected fragment of hcldec's message


def _args(*texts: str) -> Callable[[Any], bool]:
    expected = [Decimal(text) for text in texts]
    return lambda task: [Decimal(str(arg)) for arg in task.main.args] == expected


CTY_CASES = (
    CtyCase(
        "negative_ints",
        "task",
        '{"modulePath": "m.wasm", "main": [{"args": [-1, -32, -33, -128, -129,'
        " -32768, -32769, -2147483648, -2147483649, -9223372036854775808]}]}",
        _args(
            "-1",
            "-32",
            "-33",
            "-128",
            "-129",
            "-32768",
            "-32769",
            "-2147483648",
            "-2147483649",
            "-9223372036854775808",
        ),
    ),
    CtyCase(
        "large_ints",
        "task",
        '{"modulePath": "m.wasm", "main": [{"args": [0, 127, 128, 255, 256,'
        " 65535, 65536, 4294967295, 4294967296, 9223372036854775807]}]}",
        _args(
            "0",
            "127",
            "128",
            "255",
            "256",
            "65535",
            "65536",
            "4294967295",
            "4294967296",
            "9223372036854775807",
        ),
    ),
    CtyCase(
        "fractional",
        "task",
        '{"modulePath": "m.wasm", "main": [{"args": [2.5, -0.5, 3.0, 1e3]}]}',
        _args("2.5", "-0.5", "3", "1000"),
    ),
    CtyCase(
        "inexact_decimal",
        "task",
        '{"modulePath": "m.wasm", "main": [{"args": [0.1, -1.1]}]}',
        _args("0.1", "-1.1"),
    ),
    CtyCase(
        "beyond_int64",
        "task",
        '{"modulePath": "m.wasm", "main": [{"args": [9223372036854775808,'
        " 1e20, -18446744073709551616]}]}",
        _args("9223372036854775808", "1e20", "-18446744073709551616"),
    ),
    CtyCase(
        "numbers_as_strings",
        "task",
        '{"modulePath": "m.wasm", "main": [{"args": ["42", "-7", "2.5", "0.1"]}]}',
        _args("42", "-7", "2.5", "0.1"),
    ),
    CtyCase(
        "empty_args",
        "task",
        '{"modulePath": "m.wasm", "main": [{"args": []}]}',
        lambda task: task.main.args == (),
    ),
    CtyCase(
        "blocks_absent",
        "task",
        '{"modulePath": "m.wasm"}',
        lambda task: (
            task.main.func_name == "handle_buffer"
            and task.main.args == ()
            and task.io_buffer.enabled is False
        ),
    ),
    CtyCase(
        "empty_main_block",
        "task",
        '{"modulePath": "m.wasm", "main": [{}]}',
        lambda task: task.main.func_name == "handle_buffer",
    ),
    CtyCase(
        "block_as_object",
        "task",
        '{"modulePath": "m.wasm", "main": {"mainFuncName": "sum", "args": [1]}}',
        lambda task: task.main.func_name == "sum",
    ),
    CtyCase(
        "decomposed_non_ascii",
        "task",
        '{"modulePath": "/srv/cafe\\u0301/\\u00fc.wasm",'
        ' "main": [{"mainFuncName": "e\\u0301t\\u00e9"}]}',
        lambda task: (
            task.module_path == "/srv/caf\u00e9/\u00fc.wasm"
            and task.main.func_name == "\u00e9t\u00e9"
        ),
    ),
    CtyCase(
        "long_strings",
        "task",
        json.dumps({"modulePath": "/" + "a" * 40 + "/" + "b" * 300 + ".wasm"}),
        lambda task: len(task.module_path) == 347,
    ),
    CtyCase(
        "io_buffer_converted_types",
        "task",
        '{"modulePath": "m.wasm", "ioBuffer": [{"enabled": "true", "size": "64",'
        ' "inputValue": 5}]}',
        lambda task: (
            task.io_buffer.enabled is True
            and task.io_buffer.size == 64
            and task.io_buffer.input_value == "5"
        ),
    ),
    CtyCase(
        "template_escape",
        "task",
        '{"modulePath": "m.wasm", "main": [{"mainFuncName": "$${literal}"}]}',
        lambda task: task.main.func_name == "${literal}",
    ),
    CtyCase(
        "missing_required",
        "task",
        '{"main": [{"mainFuncName": "f"}]}',
        None,
        "Missing required argument",
    ),
    CtyCase(
        "unknown_attribute",
        "task",
        '{"modulePath": "m.wasm", "bogus": 1}',
        None,
        "Extraneous JSON object property",
    ),
    CtyCase(
        "plugin_empty",
        "plugin",
        "{}",
        lambda plugin: plugin.cache.enabled is True and plugin.cache.size == 5,
    ),
    CtyCase(
        "plugin_cache",
        "plugin",
        '{"cache": [{"type": "arc", "size": 10,'
        ' "expiration": [{"enabled": true, "entryTTL": 0.5}]}]}',
        lambda plugin: (
            plugin.cache.type == "arc"
            and plugin.cache.size == 10
            and plugin.cache.expiration.entry_ttl == 0.5
        ),
    ),
)


def _require_toolchain() -> None:
    if shutil.which("go") is None or not GO_PLUGIN_SOURCE.is_dir():
        pytest.fail(
            "the conformance suite needs Go and HashiCorp's libraries from Debian: "
            f"apt-get install {DEBIAN_PACKAGES}"
        )
    if not PLUGIN.exists():
        pytest.fail(f"plugin executable {PLUGIN} not found: run `make build` first")


def _json_text(data: Any) -> str:
    """Serialize a config map to JSON text, writing `Decimal` numbers exactly."""
    # json cannot write a Decimal as a number, so each is written as a marked
    # string first and the marks and quotes are removed afterwards.
    text = json.dumps(data, default=lambda value: f"{_DECIMAL_MARK}{value}")
    return re.sub(f'"{_DECIMAL_MARK}([^"]*)"', r"\1", text)


_DECIMAL_MARK = "@decimal@"


def _job_inputs() -> list[dict[str, Any]]:
    # The job parser is imported here so that a missing module fails the
    # tests that need it with its own message, not the whole file.
    from wasmtime_driver.jobspec import load_job, tasks_for_driver

    inputs = []
    for path in sorted(JOB_DIR.glob("*.nomad")):
        tasks = tasks_for_driver(load_job(path), "wasmtime")
        assert len(tasks) == 1, f"{path}: expected one wasmtime task"
        _, task = tasks[0]
        inputs.append(
            {
                "name": path.stem,
                "task": task.name,
                "config": _json_text(task.config),
                "env": task.env,
            }
        )
    return inputs


def _build_input(work: Path) -> dict[str, Any]:
    spin = work / "spin.wasm"
    spin.write_bytes(wasmtime.wat2wasm(SPIN_WAT))
    scratch = work / "allocs"
    scratch.mkdir()
    valid = json.dumps({"modulePath": str(spin), "main": [{"mainFuncName": "spin"}]})
    invalid = json.dumps({"modulePath": str(spin), "ioBuffer": [{"size": -1}]})
    return {
        "plugin": str(PLUGIN),
        "plugin_workdir": str(REPO),
        "scratch_dir": str(scratch),
        "plugin_config": "{}",
        "jobs": _job_inputs(),
        "spin": {"name": "spin", "task": "spin", "config": valid},
        "recoverable": {"name": "recoverable", "task": "logs", "config": valid},
        "invalid": {"name": "invalid", "task": "invalid", "config": invalid},
        "cty_cases": [
            {"name": case.name, "schema": case.schema, "config": case.config}
            for case in CTY_CASES
        ],
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _require_toolchain()
    work = tmp_path_factory.mktemp("conformance")
    input_path = work / "input.json"
    input_path.write_text(json.dumps(_build_input(work)))
    report_path = work / "report.json"
    completed = subprocess.run(
        [str(RUN_SH), str(work / "build"), "-input", str(input_path)]
        + ["-output", str(report_path)],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    if completed.returncode not in (0, 1) or not report_path.exists():
        pytest.fail(
            f"conformance client failed with exit code {completed.returncode}:\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    result: dict[str, Any] = json.loads(report_path.read_text())
    result["go_output"] = completed.stderr
    return result


def _scenario(report: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for scenario in report["scenarios"]:
        if scenario["name"] == name:
            return scenario  # type: ignore[no-any-return]
    pytest.fail(f"scenario {name!r} did not run:\n{report['go_output']}")


def _assert_checks(report: Mapping[str, Any], name: str) -> None:
    scenario = _scenario(report, name)
    failed = [check for check in scenario["checks"] if not check["ok"]]
    assert not failed, (
        f"{name}: {json.dumps(failed, indent=2)}\n"
        f"data: {json.dumps(scenario['data'], indent=2)}\n"
        f"Go output:\n{report['go_output']}"
    )
    assert scenario["checks"], f"{name} recorded no checks"


def test_conformance_handshake_ping_and_kill(report: dict[str, Any]) -> None:
    _assert_checks(report, "handshake_and_kill")


def test_conformance_nomad_launch_sequence(report: dict[str, Any]) -> None:
    _assert_checks(report, "nomad_launch_sequence")


def test_conformance_stop_spinning_task(report: dict[str, Any]) -> None:
    _assert_checks(report, "stop_spinning_task")


def test_conformance_start_failures(report: dict[str, Any]) -> None:
    _assert_checks(report, "start_failures")


@dataclass(frozen=True)
class JobOutcome:
    stdout: str
    stderr: str
    exit_code: int


# What each example job prints, as its header comment states. A job file
# without an entry fails test_conformance_example_jobs.
EXPECTED_JOBS = {
    "sum": JobOutcome("802366\n", "", 0),
    "reverse": JobOutcome("!dlrow ,olleH", "", 0),
    "json_upper": JobOutcome('{"output":"HELLO FROM NOMAD"}', "", 0),
    "typed": JobOutcome("0.30000000000000004\n", "", 0),
    "hello_wasi": JobOutcome(
        "hello, nomad\nargv: hello_wasi.wasm /etc/hostname\n",
        "hello_wasi: this line goes to stderr\n"
        "cannot open /etc/hostname: Capabilities insufficient\n",
        3,
    ),
}


def test_conformance_example_jobs(report: dict[str, Any]) -> None:
    _assert_checks(report, "example_jobs")
    names = sorted(path.stem for path in JOB_DIR.glob("*.nomad"))
    assert names, f"no example jobs found in {JOB_DIR}"
    assert sorted(EXPECTED_JOBS) == names, "EXPECTED_JOBS must list every job"
    outcomes = {job["name"]: job for job in report["jobs"]}
    for name in names:
        expected = EXPECTED_JOBS[name]
        job = outcomes[name]
        assert job["stdout"] == expected.stdout, f"{name} stdout: {job}"
        assert job["stderr"] == expected.stderr, f"{name} stderr: {job}"
        assert job["exit_code"] == expected.exit_code, f"{name} exit code: {job}"
        assert job["signal"] == 0, f"{name} signal: {job}"


def _as_go_cty_1_16(data: bytes) -> bytes:
    """Rewrite go-cty 1.12 bytes into the bytes go-cty 1.16 sends.

    The encodings differ in one case for values Nomad produces: an integral
    number outside int64 that is exactly a float64 (2**63, 1e20). go-cty
    1.12.1 (Nomad 1.6.0 to 1.8.0) and 1.13 (to 1.9.4) write it as a msgpack
    float64, and 1.16 (Nomad 1.9.5 and later) as its decimal text in a str.
    """

    def upgrade(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return item if INT64_MIN <= item <= INT64_MAX else str(int(item))
        if isinstance(item, list):
            return [upgrade(element) for element in item]
        if isinstance(item, dict):
            return {key: upgrade(element) for key, element in item.items()}
        return item

    packed: bytes = msgpack.packb(upgrade(msgpack.unpackb(data)), use_bin_type=True)
    return packed


def _repacked(data: bytes) -> bytes:
    packed: bytes = msgpack.packb(msgpack.unpackb(data), use_bin_type=True)
    return packed


def _python_spec(schema: str) -> Any:
    from wasmtime_driver import config

    if schema == "plugin":
        return config.plugin_config_spec()
    return config.task_config_spec()


def _python_bytes(schema: str, config_text: str) -> bytes:
    from wasmtime_driver import ctymsgpack, hcldec

    config_map = json.loads(config_text, parse_float=Decimal)
    return ctymsgpack.marshal(hcldec.decode(_python_spec(schema), config_map))


def _go_cty_results(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    _assert_checks(report, "cty_encoding")
    return {result["name"]: result for result in report["cty"]}


def test_conformance_schemas_match_declarations(report: dict[str, Any]) -> None:
    from wasmtime_driver.hclspec import spec_from_protojson

    for schema in ("plugin", "task"):
        if schema not in report["schemas"]:
            pytest.fail(f"the plugin sent no {schema} schema:\n{report['go_output']}")
        sent = spec_from_protojson(json.loads(report["schemas"][schema]))
        assert sent == _python_spec(schema), f"{schema} schema differs"


@pytest.mark.parametrize("case", CTY_CASES, ids=lambda case: case.name)
def test_conformance_cty_bytes_match(report: dict[str, Any], case: CtyCase) -> None:
    from wasmtime_driver.hcldec import DecodeError

    result = _go_cty_results(report)[case.name]
    if case.error is not None:
        assert case.error in result.get("error", ""), f"go-cty result: {result}"
        with pytest.raises(DecodeError, match=case.error):
            _python_bytes(case.schema, case.config)
        return

    assert "error" not in result, f"hcldec rejected {case.config}: {result}"
    go_bytes = bytes.fromhex(result["hex"])
    assert _repacked(go_bytes) == go_bytes, "msgpack-python re-encodes differently"
    python_bytes = _python_bytes(case.schema, case.config)
    assert python_bytes.hex() == _as_go_cty_1_16(go_bytes).hex(), (
        f"go-cty 1.12.1 value {result['value_json']}"
    )


def test_conformance_cty_version_differences(report: dict[str, Any]) -> None:
    results = _go_cty_results(report)
    differing = sorted(
        name
        for name, result in results.items()
        if "hex" in result
        and _as_go_cty_1_16(bytes.fromhex(result["hex"]))
        != bytes.fromhex(result["hex"])
    )
    assert differing == ["beyond_int64"]


@pytest.mark.parametrize(
    "case", [case for case in CTY_CASES if case.decoded], ids=lambda case: case.name
)
def test_conformance_cty_plugin_decodes(report: dict[str, Any], case: CtyCase) -> None:
    from wasmtime_driver import config

    result = _go_cty_results(report)[case.name]
    go_bytes = bytes.fromhex(result["hex"])
    decode: Callable[[bytes], Any] = config.decode_task_config
    if case.schema == "plugin":
        decode = config.decode_plugin_config
    decoded = decode(go_bytes)
    from_python = decode(_as_go_cty_1_16(go_bytes))
    assert case.decoded is not None
    assert case.decoded(decoded), f"decoded {decoded}"
    assert decoded == from_python, "go-cty 1.12 and 1.16 bytes decode differently"


def test_conformance_job_config_bytes_match(report: dict[str, Any]) -> None:
    _assert_checks(report, "example_jobs")
    inputs = {job["name"]: job for job in _job_inputs()}
    for job in report["jobs"]:
        go_bytes = bytes.fromhex(job["config_hex"])
        python_bytes = _python_bytes("task", inputs[job["name"]]["config"])
        assert python_bytes.hex() == _as_go_cty_1_16(go_bytes).hex(), job["name"]
