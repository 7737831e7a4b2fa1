from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from wasmtime_driver.engine import Interrupt, create_engine, create_store
from wasmtime_driver.errors import TaskError
from wasmtime_driver.iobuffer import run_io_buffer
from wasmtime_driver.settings import IOBuffer, MainCall

MODULES = Path(__file__).parent.parent / "example" / "wasm-modules"

ENGINE = create_engine()

# Echo: the buffer sits at offset 16 of a one-page memory and main returns
# the input length, so the output is the input.
ECHO = """
(module
  (memory (export "memory") 1)
  (func (export "get_io_buffer_ptr") (result i32) i32.const 16)
  (func (export "handle_buffer") (param i32) (result i32) local.get 0))
"""


def run(
    wat_or_path: str | Path,
    buffer: IOBuffer | None = None,
    main: MainCall | None = None,
) -> bytes:
    if isinstance(wat_or_path, Path):
        module = wasmtime.Module.from_file(ENGINE, str(wat_or_path))
    else:
        module = wasmtime.Module(ENGINE, wat_or_path)
    interrupt = Interrupt()
    store = create_store(ENGINE, interrupt)
    exports = wasmtime.Instance(store, module, []).exports(store)
    return run_io_buffer(
        store,
        module,
        exports,
        buffer or IOBuffer(enabled=True, input_value="hello"),
        main or MainCall(),
        interrupt,
    )


def buffer_module(offset_body: str, main_body: str, memory: str = "") -> str:
    memory = memory or '(memory (export "memory") 1)'
    return f"""
    (module
      {memory}
      (func (export "get_io_buffer_ptr") {offset_body})
      (func (export "handle_buffer") (param i32) {main_body}))
    """


def test_io_buffer_echo() -> None:
    assert run(ECHO) == b"hello"


def test_io_buffer_input_exactly_size() -> None:
    buffer = IOBuffer(enabled=True, size=5, input_value="hello")
    assert run(ECHO, buffer) == b"hello"


def test_io_buffer_input_longer_than_size() -> None:
    buffer = IOBuffer(enabled=True, size=4, input_value="héllo")
    message = "io buffer input is 6 bytes, more than the io buffer size of 4 bytes"
    with pytest.raises(TaskError, match=message):
        run(ECHO, buffer)


def test_io_buffer_args_and_length_passed() -> None:
    # get_io_buffer_ptr(offset) returns its argument, and main(a, n) returns
    # n - a, so the output proves both calls received their arguments.
    wat = """
    (module
      (memory (export "memory") 1)
      (func (export "ptr") (param i32) (result i32) local.get 0)
      (func (export "main") (param i32 i32) (result i32)
        local.get 1 local.get 0 i32.sub))
    """
    buffer = IOBuffer(enabled=True, input_value="abcdef", func_name="ptr", args=(100,))
    assert run(wat, buffer, MainCall("main", (2,))) == b"abcd"


def test_io_buffer_missing_memory() -> None:
    wat = buffer_module("(result i32) i32.const 0", "(result i32) i32.const 1", " ")
    with pytest.raises(TaskError, match='needs a memory exported as "memory"'):
        run(wat)


def test_io_buffer_func_missing() -> None:
    buffer = IOBuffer(enabled=True, input_value="x", func_name="get_ptr")
    with pytest.raises(
        TaskError, match='function "get_ptr" is not exported.*"get_io_buffer_ptr"'
    ):
        run(ECHO, buffer)


def test_io_buffer_func_not_function() -> None:
    wat = """
    (module
      (memory (export "memory") 1)
      (global (export "get_io_buffer_ptr") i32 (i32.const 0))
      (func (export "handle_buffer") (param i32) (result i32) local.get 0))
    """
    with pytest.raises(
        TaskError,
        match='export "get_io_buffer_ptr" is a global, not a function; exported',
    ):
        run(wat)


@pytest.mark.parametrize(
    ("offset_body", "returns"),
    [
        ("(result i64) i64.const 0", "i64"),
        ("", "nothing"),
        ("(result i32 i32) i32.const 0 i32.const 0", "i32, i32"),
    ],
    ids=["i64", "nothing", "two"],
)
def test_io_buffer_func_non_i32_result(offset_body: str, returns: str) -> None:
    wat = buffer_module(offset_body, "(result i32) local.get 0")
    message = (
        f'function "get_io_buffer_ptr" must return one i32 \\(buffer offset\\) '
        f"but returns {returns}"
    )
    with pytest.raises(TaskError, match=message):
        run(wat)


def test_io_buffer_main_non_i32_result() -> None:
    wat = buffer_module("(result i32) i32.const 0", "(result f64) f64.const 1")
    message = 'function "handle_buffer" must return one i32 .output length'
    with pytest.raises(TaskError, match=message):
        run(wat)


def test_io_buffer_main_missing() -> None:
    with pytest.raises(TaskError, match='function "transform" is not exported'):
        run(ECHO, main=MainCall("transform"))


def test_io_buffer_offset_outside_memory() -> None:
    wat = buffer_module("(result i32) i32.const 65534", "(result i32) local.get 0")
    message = (
        "io buffer input of 5 bytes at offset 65534 ends at 65539, "
        r"past the end of memory \(65536 bytes\)"
    )
    with pytest.raises(TaskError, match=message):
        run(wat)


def test_io_buffer_negative_offset_is_unsigned() -> None:
    wat = buffer_module("(result i32) i32.const -1", "(result i32) local.get 0")
    with pytest.raises(TaskError, match="at offset 4294967295 ends at"):
        run(wat)


def test_io_buffer_output_outside_memory() -> None:
    wat = buffer_module("(result i32) i32.const 65530", "(result i32) i32.const 4000")
    message = "io buffer output of 4000 bytes at offset 65530 ends at 69530"
    with pytest.raises(TaskError, match=message):
        run(wat)


def test_io_buffer_output_longer_than_size() -> None:
    wat = buffer_module("(result i32) i32.const 0", "(result i32) i32.const 4097")
    message = (
        'function "handle_buffer" returned output length 4097, outside the io '
        "buffer size of 4096 bytes"
    )
    with pytest.raises(TaskError, match=message):
        run(wat)


def test_io_buffer_negative_output_length() -> None:
    wat = buffer_module("(result i32) i32.const 0", "(result i32) i32.const -3")
    with pytest.raises(TaskError, match="returned output length -3, outside"):
        run(wat)


def test_io_buffer_main_reports_failure() -> None:
    wat = buffer_module("(result i32) i32.const 0", "(result i32) i32.const 0")
    with pytest.raises(TaskError, match='"handle_buffer" returned 0, which reports'):
        run(wat)


def test_io_buffer_trap_in_main() -> None:
    wat = buffer_module("(result i32) i32.const 0", "(result i32) unreachable")
    with pytest.raises(TaskError, match='"handle_buffer" trapped: wasm trap'):
        run(wat)


def test_io_buffer_output_after_memory_grow() -> None:
    # main grows memory by one page and points past the original end.
    wat = buffer_module(
        "(result i32) i32.const 65530",
        "(result i32) (drop (memory.grow (i32.const 1))) i32.const 100",
    )
    output = run(wat)
    assert output[:5] == b"hello"
    assert len(output) == 100


def test_io_buffer_reverse_module() -> None:
    buffer = IOBuffer(enabled=True, input_value="héllo wörld")
    assert run(MODULES / "reverse.wasm", buffer).decode() == "dlröw olléh"


def test_io_buffer_json_upper_module() -> None:
    buffer = IOBuffer(enabled=True, input_value='{"n": [1, {}], "line": "a\\"b é"}')
    assert run(MODULES / "json_upper.wasm", buffer).decode() == ('{"output":"A\\"B é"}')


def test_io_buffer_json_upper_rejects_invalid() -> None:
    buffer = IOBuffer(enabled=True, input_value='{"line": 3}')
    with pytest.raises(TaskError, match="returned 0, which reports a failure"):
        run(MODULES / "json_upper.wasm", buffer)


def test_io_buffer_shared_memory_named() -> None:
    # The driver's engine rejects shared memories at instantiation, so this
    # engine enables them to reach the io buffer's own check.
    wasm_config = wasmtime.Config()
    wasm_config.shared_memory = True
    engine = wasmtime.Engine(wasm_config)
    module = wasmtime.Module(
        engine,
        '(module (memory (export "memory") 1 1 shared)'
        ' (func (export "get_io_buffer_ptr") (result i32) i32.const 0)'
        ' (func (export "handle_buffer") (param i32) (result i32) i32.const 1))',
    )
    interrupt = Interrupt()
    store = create_store(engine, interrupt)
    exports = wasmtime.Instance(store, module, []).exports(store)
    message = 'memory exported as "memory", but it is a shared memory'
    with pytest.raises(TaskError, match=message):
        run_io_buffer(
            store, module, exports, IOBuffer(enabled=True), MainCall(), interrupt
        )


def test_io_buffer_memory_export_wrong_kind() -> None:
    wat = (
        '(module (global (export "memory") i32 (i32.const 0))'
        ' (func (export "get_io_buffer_ptr") (result i32) i32.const 0)'
        ' (func (export "handle_buffer") (param i32) (result i32) i32.const 1))'
    )
    with pytest.raises(TaskError, match='but export "memory" is a global$'):
        run(wat, IOBuffer(enabled=True))
