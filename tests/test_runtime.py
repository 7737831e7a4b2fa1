from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import wasmtime

from wasmtime_driver.engine import Interrupt, create_engine
from wasmtime_driver.errors import ModuleError, TaskError
from wasmtime_driver.runtime import (
    TaskInterrupted,
    TaskIO,
    resolve_module_path,
    run_task,
)
from wasmtime_driver.settings import IOBuffer, MainCall, TaskConfig

MODULES = Path(__file__).parent.parent / "example" / "wasm-modules"
ENGINE = create_engine()
JOIN_TIMEOUT = 10.0  # seconds; only guards against a hung test


def run(
    tmp_path: Path,
    wasm: Path | str,
    config: TaskConfig,
    interrupt: Interrupt | None = None,
) -> tuple[int, bytes, bytes]:
    if isinstance(wasm, str):
        path = tmp_path / "module.wasm"
        path.write_bytes(wasmtime.wat2wasm(wasm))
    else:
        path = wasm
    module = wasmtime.Module.from_file(ENGINE, str(path))
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        io = TaskIO(
            stdout, stderr, tmp_path, tmp_path, "module.wasm", {}, module_path=path
        )
        code = run_task(ENGINE, module, config, io, interrupt or Interrupt())
    return code, stdout_path.read_bytes(), stderr_path.read_bytes()


@pytest.mark.parametrize(
    ("module", "config", "output"),
    [
        ("sum", TaskConfig("", MainCall("sum", (123456, 678910))), b"802366\n"),
        ("sum", TaskConfig("", MainCall("sum", (2147483647, 1))), b"-2147483648\n"),
        (
            "reverse",
            TaskConfig("", io_buffer=IOBuffer(True, input_value="Hello, world!")),
            b"!dlrow ,olleH",
        ),
        (
            "json_upper",
            TaskConfig(
                "", io_buffer=IOBuffer(True, input_value='{"line": "hello from nomad"}')
            ),
            b'{"output":"HELLO FROM NOMAD"}',
        ),
        (
            "typed",
            TaskConfig("", MainCall("scale", (3, "0.1"))),
            b"0.30000000000000004\n",
        ),
        ("typed", TaskConfig("", MainCall("half", ("0.2",))), b"0.1\n"),
        (
            "typed",
            TaskConfig("", MainCall("negate", ("9223372036854775808",))),
            b"-9223372036854775808\n",
        ),
        ("typed", TaskConfig("", MainCall("divmod", (17, 5))), b"3 2\n"),
    ],
    ids=[
        "sum",
        "sum-wraps",
        "reverse",
        "json_upper",
        "scale",
        "half",
        "negate",
        "divmod",
    ],
)
def test_run_task_example_modules(
    tmp_path: Path, module: str, config: TaskConfig, output: bytes
) -> None:
    code, stdout, stderr = run(tmp_path, MODULES / f"{module}.wasm", config)
    assert code == 0
    assert stdout == output
    assert stderr == b""


def test_run_task_missing_function(tmp_path: Path) -> None:
    config = TaskConfig("", MainCall("add", (1, 2)))
    message = 'function "add" is not exported by the module; exported functions: "sum"$'
    with pytest.raises(TaskError, match=message):
        run(tmp_path, MODULES / "sum.wasm", config)


def test_run_task_trap(tmp_path: Path) -> None:
    config = TaskConfig("", MainCall("divmod", (1, 0)))
    with pytest.raises(
        TaskError, match='"divmod" trapped: wasm trap: integer divide by zero'
    ):
        run(tmp_path, MODULES / "typed.wasm", config)


def test_run_task_no_result_prints_nothing(tmp_path: Path) -> None:
    wat = '(module (func (export "noop")))'
    assert run(tmp_path, wat, TaskConfig("", MainCall("noop"))) == (0, b"", b"")


def test_run_task_unprintable_result(tmp_path: Path) -> None:
    wat = '(module (func (export "f") (result funcref) ref.null func))'
    with pytest.raises(
        TaskError,
        match='function "f" result 1 has type funcref, which the driver cannot print',
    ):
        run(tmp_path, wat, TaskConfig("", MainCall("f")))


def test_run_task_start_rule_default_name(tmp_path: Path) -> None:
    code, stdout, _ = run(tmp_path, MODULES / "hello_wasi.wasm", TaskConfig(""))
    assert code == 0
    assert stdout.startswith(b"hello, world\n")


def test_run_task_start_rule_explicit(tmp_path: Path) -> None:
    code, stdout, _ = run(
        tmp_path, MODULES / "hello_wasi.wasm", TaskConfig("", MainCall("_start"))
    )
    assert code == 0
    assert stdout.startswith(b"hello, world\n")


def test_run_task_start_rule_prefers_handle_buffer(tmp_path: Path) -> None:
    wat = """
    (module
      (func (export "_start") unreachable)
      (func (export "handle_buffer") (result i32) i32.const 5))
    """
    assert run(tmp_path, wat, TaskConfig("")) == (0, b"5\n", b"")


def test_run_task_start_rule_only_for_default(tmp_path: Path) -> None:
    config = TaskConfig("", MainCall("main"))
    with pytest.raises(TaskError, match='"main" is not exported.*"_start"'):
        run(tmp_path, MODULES / "hello_wasi.wasm", config)


def test_run_task_default_without_start(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match='"handle_buffer" is not exported.*"sum"'):
        run(tmp_path, MODULES / "sum.wasm", TaskConfig(""))


def test_run_task_calls_initialize_first(tmp_path: Path) -> None:
    wat = """
    (module
      (global $ready (mut i32) (i32.const 0))
      (func (export "_initialize") (global.set $ready (i32.const 7)))
      (func (export "ready") (result i32) global.get $ready))
    """
    assert run(tmp_path, wat, TaskConfig("", MainCall("ready"))) == (0, b"7\n", b"")


def test_run_task_start_function_trap(tmp_path: Path) -> None:
    wat = '(module (func $boom unreachable) (start $boom) (func (export "f")))'
    with pytest.raises(
        ModuleError, match="failed to instantiate module: .*unreachable"
    ):
        run(tmp_path, wat, TaskConfig("", MainCall("f")))


@pytest.mark.parametrize(
    "wat",
    [
        '(module (func (export "spin") (loop br 0)))',
        '(module (func $spin (loop br 0)) (start $spin) (func (export "spin")))',
    ],
    ids=["call", "start-function"],
)
def test_run_task_interrupted(tmp_path: Path, wat: str) -> None:
    interrupt = Interrupt()
    errors: list[Exception] = []

    def target() -> None:
        try:
            run(tmp_path, wat, TaskConfig("", MainCall("spin")), interrupt)
        except Exception as err:  # noqa: BLE001 - recorded for the test to check
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(0.05)
    assert thread.is_alive()
    interrupt.request()
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], TaskInterrupted)


def test_run_task_requested_before_start(tmp_path: Path) -> None:
    interrupt = Interrupt()
    interrupt.request()
    with pytest.raises(TaskInterrupted, match="task stopped"):
        run(
            tmp_path,
            MODULES / "sum.wasm",
            TaskConfig("", MainCall("sum", (1, 2))),
            interrupt,
        )


# Each main function takes and returns i32 but computes with v128 inside.
SIMD_WAT = """
(module
  (func (export "mul_lanes") (param i32 i32) (result i32)
    local.get 0 i32x4.splat
    local.get 1 i32x4.splat
    i32x4.mul
    i32x4.extract_lane 3)
  (func (export "swizzle_byte") (param i32) (result i32)
    v128.const i8x16 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25
    local.get 0 i8x16.splat
    i8x16.relaxed_swizzle
    i8x16.extract_lane_u 0)
  (func (export "v128_param") (param i32 v128) (result i32) local.get 0)
  (func (export "v128_result") (result v128) v128.const i64x2 1 2)
  (func (export "v128_second_result") (result i32 v128)
    i32.const 1 v128.const i64x2 1 2))
"""


def test_run_task_simd_inside_function(tmp_path: Path) -> None:
    config = TaskConfig("", MainCall("mul_lanes", (6, 7)))
    assert run(tmp_path, SIMD_WAT, config) == (0, b"42\n", b"")


def test_run_task_relaxed_simd(tmp_path: Path) -> None:
    config = TaskConfig("", MainCall("swizzle_byte", (5,)))
    assert run(tmp_path, SIMD_WAT, config) == (0, b"15\n", b"")


@pytest.mark.parametrize(
    ("main", "message"),
    [
        (
            MainCall("v128_param", (1, 3)),
            (
                'function "v128_param" argument 2 (value 3) has type v128, which '
                "a job cannot pass; only i32, i64, f32 and f64 arguments are "
                "supported"
            ),
        ),
        (
            MainCall("v128_param", (1,)),
            'function "v128_param" argument 2 has type v128, which a job cannot pass',
        ),
        (
            MainCall("v128_result"),
            (
                'function "v128_result" result 1 has type v128, which the driver '
                "cannot print"
            ),
        ),
        (
            MainCall("v128_second_result"),
            'function "v128_second_result" result 2 has type v128',
        ),
    ],
    ids=["param-given", "param-missing", "result", "second-result"],
)
def test_run_task_v128_signature_fails(
    tmp_path: Path, main: MainCall, message: str
) -> None:
    # A v128 reaching wasmtime-py's type API would abort this test process.
    with pytest.raises(TaskError, match=re.escape(message)):
        run(tmp_path, SIMD_WAT, TaskConfig("", main))
    config = TaskConfig("", MainCall("mul_lanes", (2, 3)))
    assert run(tmp_path, SIMD_WAT, config) == (0, b"6\n", b"")


def test_run_task_v128_initialize(tmp_path: Path) -> None:
    wat = """
    (module
      (func (export "_initialize") (param v128))
      (func (export "f") (result i32) i32.const 1))
    """
    with pytest.raises(TaskError, match='"_initialize" argument 1 has type v128'):
        run(tmp_path, wat, TaskConfig("", MainCall("f")))


def test_run_task_v128_start(tmp_path: Path) -> None:
    wat = '(module (func (export "_start") (result v128) v128.const i64x2 0 0))'
    with pytest.raises(TaskError, match='"_start" result 1 has type v128'):
        run(tmp_path, wat, TaskConfig(""))


@pytest.mark.parametrize(
    ("buffer_func", "main_func", "message"),
    [
        ("v128_ptr", "handle", '"v128_ptr" result 1 has type v128'),
        ("ptr", "v128_handle", '"v128_handle" argument 1 (value 5) has type v128'),
    ],
    ids=["buffer-function", "main-function"],
)
def test_run_task_v128_io_buffer(
    tmp_path: Path, buffer_func: str, main_func: str, message: str
) -> None:
    wat = """
    (module
      (memory (export "memory") 1)
      (func (export "ptr") (result i32) i32.const 16)
      (func (export "v128_ptr") (result v128) v128.const i64x2 0 0)
      (func (export "handle") (param i32) (result i32) local.get 0)
      (func (export "v128_handle") (param v128 i32) (result i32) local.get 1))
    """
    buffer = IOBuffer(True, input_value="hello", func_name=buffer_func)
    config = TaskConfig("", MainCall(main_func), io_buffer=buffer)
    with pytest.raises(TaskError, match=re.escape(message)):
        run(tmp_path, wat, config)


def test_run_task_missing_function_lists_v128_exports(tmp_path: Path) -> None:
    message = '"missing" is not exported by the module; exported functions: '
    with pytest.raises(TaskError, match=message + '"mul_lanes", "swizzle'):
        run(tmp_path, SIMD_WAT, TaskConfig("", MainCall("missing")))


def test_run_task_v128_import_rejected(tmp_path: Path) -> None:
    wat = """
    (module
      (import "env" "g" (func (param v128)))
      (import "env" "v" (global v128))
      (func (export "f")))
    """
    with pytest.raises(
        ModuleError, match='"env"."g" \\(function, .*"env"."v" \\(global'
    ):
        run(tmp_path, wat, TaskConfig("", MainCall("f")))


def test_run_task_module_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "module.wasm"
    module = wasmtime.Module(ENGINE, '(module (func (export "f")))')
    path.write_bytes(wasmtime.wat2wasm('(module (func (export "g")))'))
    with (tmp_path / "out").open("wb") as out:
        io = TaskIO(out, out, tmp_path, tmp_path, "module.wasm", module_path=path)
        with pytest.raises(ModuleError, match="file changed after it was compiled"):
            run_task(ENGINE, module, TaskConfig("", MainCall("f")), io, Interrupt())


def test_run_task_malformed_module_file(tmp_path: Path) -> None:
    path = tmp_path / "module.wasm"
    module = wasmtime.Module(ENGINE, '(module (func (export "f")))')
    path.write_bytes(b"not wasm")
    with (tmp_path / "out").open("wb") as out:
        io = TaskIO(out, out, tmp_path, tmp_path, "module.wasm", module_path=path)
        with pytest.raises(ModuleError, match="module.wasm' is not a valid"):
            run_task(ENGINE, module, TaskConfig("", MainCall("f")), io, Interrupt())


def test_resolve_module_path_task_dir_first(tmp_path: Path) -> None:
    task_dir, cwd = tmp_path / "task", tmp_path / "cwd"
    for directory in (task_dir, cwd):
        (directory / "mods").mkdir(parents=True)
        (directory / "mods" / "m.wasm").write_bytes(b"\0asm")
    assert (
        resolve_module_path("mods/m.wasm", task_dir, cwd)
        == task_dir / "mods" / "m.wasm"
    )


def test_resolve_module_path_cwd_fallback(tmp_path: Path) -> None:
    task_dir, cwd = tmp_path / "task", tmp_path / "cwd"
    task_dir.mkdir()
    cwd.mkdir()
    (cwd / "m.wasm").write_bytes(b"\0asm")
    assert resolve_module_path("m.wasm", task_dir, cwd) == cwd / "m.wasm"


def test_resolve_module_path_absolute(tmp_path: Path) -> None:
    module = tmp_path / "m.wasm"
    module.write_bytes(b"\0asm")
    assert (
        resolve_module_path(str(module), tmp_path / "task", tmp_path / "cwd") == module
    )


def test_resolve_module_path_missing(tmp_path: Path) -> None:
    task_dir, cwd = tmp_path / "task", tmp_path / "cwd"
    message = (
        f'module file "m.wasm" not found in the task directory \\("{task_dir}"\\) '
        f'or the agent\'s working directory \\("{cwd}"\\)'
    )
    with pytest.raises(ModuleError, match=message):
        resolve_module_path("m.wasm", task_dir, cwd)


def test_resolve_module_path_missing_absolute(tmp_path: Path) -> None:
    missing = tmp_path / "gone.wasm"
    with pytest.raises(ModuleError, match=f'module file "{missing}" not found$'):
        resolve_module_path(str(missing), tmp_path, tmp_path)


def test_resolve_module_path_directory_is_not_module(tmp_path: Path) -> None:
    (tmp_path / "m.wasm").mkdir()
    message = f'module file "{tmp_path / "m.wasm"}" is a directory; set modulePath'
    with pytest.raises(ModuleError, match=message):
        resolve_module_path("m.wasm", tmp_path, tmp_path)


def test_run_task_shared_memory_named(tmp_path: Path) -> None:
    wat = '(module (memory (export "memory") 1 1 shared) (func (export "f")))'
    message = "failed to instantiate module: the module defines a shared memory"
    with pytest.raises(ModuleError, match=message):
        run(tmp_path, wat, TaskConfig("", MainCall("f")))


def test_resolve_module_path_too_long(tmp_path: Path) -> None:
    long_name = "a" * 100_000
    message = (
        r'module file ".*a{10}\.\.\." \(\d+ characters\) cannot be opened: '
        r"path too long \(\d+ characters\); set modulePath to a \.wasm file"
    )
    with pytest.raises(ModuleError, match=message):
        resolve_module_path(long_name, tmp_path, tmp_path)


def test_resolve_module_path_device_not_regular(tmp_path: Path) -> None:
    message = 'module file "/dev/zero" is not a regular file; set modulePath'
    with pytest.raises(ModuleError, match=message):
        resolve_module_path("/dev/zero", tmp_path, tmp_path)


def test_resolve_module_path_nul_character(tmp_path: Path) -> None:
    with pytest.raises(ModuleError, match='"m\\\\u0000.wasm": it contains a NUL'):
        resolve_module_path("m\0.wasm", tmp_path, tmp_path)


def test_resolve_module_path_prefers_file_over_directory(tmp_path: Path) -> None:
    task_dir, cwd = tmp_path / "task", tmp_path / "cwd"
    (task_dir / "m.wasm").mkdir(parents=True)
    cwd.mkdir()
    (cwd / "m.wasm").write_bytes(b"\0asm")
    assert resolve_module_path("m.wasm", task_dir, cwd) == cwd / "m.wasm"
