from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from wasmtime_driver.engine import Interrupt, create_engine
from wasmtime_driver.errors import ModuleError, TaskError
from wasmtime_driver.runtime import TaskIO, run_task
from wasmtime_driver.settings import MainCall, TaskConfig, WasiPreopen, WasiSettings
from wasmtime_driver.wasi import resolve_preopen

HELLO = Path(__file__).parent.parent / "example" / "wasm-modules" / "hello_wasi.wasm"
ENGINE = create_engine()


class Task:
    """A task directory layout like Nomad's: alloc/<task> inside alloc."""

    def __init__(self, root: Path) -> None:
        self.alloc_dir = root / "alloc"
        self.task_dir = self.alloc_dir / "hello"
        self.task_dir.mkdir(parents=True)
        self.stdout_path = root / "stdout"
        self.stderr_path = root / "stderr"

    def run(
        self,
        wasm: Path | str,
        wasi: WasiSettings | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        if isinstance(wasm, Path):
            module = wasmtime.Module.from_file(ENGINE, str(wasm))
        else:
            module = wasmtime.Module(ENGINE, wasm)
        config = TaskConfig(module_path=str(wasm), wasi=wasi or WasiSettings())
        stdout = self.stdout_path.open("wb")
        stderr = self.stderr_path.open("wb")
        with stdout, stderr:
            io = TaskIO(
                stdout=stdout,
                stderr=stderr,
                task_dir=self.task_dir,
                alloc_dir=self.alloc_dir,
                module_name="hello_wasi.wasm",
                env=env or {},
            )
            return run_task(ENGINE, module, config, io, Interrupt())

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


@pytest.fixture
def task(tmp_path: Path) -> Task:
    return Task(tmp_path)


def test_wasi_stdout_stderr_env_argv(task: Task) -> None:
    code = task.run(HELLO, WasiSettings(args=()), {"HELLO_NAME": "nomad"})
    assert code == 0
    assert task.stdout == "hello, nomad\nargv: hello_wasi.wasm\n"
    assert task.stderr == "hello_wasi: this line goes to stderr\n"


def test_wasi_env_is_only_task_env(task: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELLO_NAME", "plugin process")
    task.run(HELLO)
    assert task.stdout.startswith("hello, world\n")


def test_wasi_exit_code(task: Task) -> None:
    assert task.run(HELLO, env={"HELLO_EXIT_CODE": "42"}) == 42


def test_wasi_denies_ungranted_path(task: Task, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read\n")
    code = task.run(HELLO, WasiSettings(args=(str(secret),)))
    assert code == 3
    assert f"cannot open {secret}: Capabilities insufficient" in task.stderr
    assert "do not read" not in task.stdout


def test_wasi_preopen_grants_read(task: Task) -> None:
    data = task.task_dir / "local"
    data.mkdir()
    (data / "greeting.txt").write_text("granted\n")
    preopen = WasiPreopen(host_path="local", guest_path="/data", read_only=True)
    code = task.run(HELLO, WasiSettings(("/data/greeting.txt",), (preopen,)))
    assert code == 0
    assert "/data/greeting.txt: granted\n" in task.stdout


def test_wasi_read_only_preopen_denies_write(task: Task) -> None:
    # The module opens "out.txt" for writing in the preopened directory.
    wat = """
    (module
      (import "wasi_snapshot_preview1" "path_open"
        (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "out.txt")
      (func (export "open_for_write") (result i32)
        ;; fd 3 is the first preopen; oflags 1 = O_CREAT; rights 64 = fd_write
        (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 7)
          (i32.const 1) (i64.const 64) (i64.const 64) (i32.const 0)
          (i32.const 100))))
    """
    (task.task_dir / "out").mkdir()
    results = {}
    for read_only in (False, True):
        preopen = WasiPreopen(host_path="out", guest_path="/out", read_only=read_only)
        config = TaskConfig(
            "inline",
            main=MainCall("open_for_write"),
            wasi=WasiSettings(preopens=(preopen,)),
        )
        module = wasmtime.Module(ENGINE, wat)
        with task.stdout_path.open("wb") as out:
            io = TaskIO(out, out, task.task_dir, task.alloc_dir, "inline")
            run_task(ENGINE, module, config, io, Interrupt())
        results[read_only] = task.stdout_path.read_text().strip()
    assert results[False] == "0"
    assert results[True] != "0"
    assert (task.task_dir / "out" / "out.txt").exists()


def test_resolve_preopen_alloc_dir_itself(task: Task) -> None:
    # The task directory's parent is the allocation directory, which is allowed.
    preopen = WasiPreopen(host_path="..", guest_path="/alloc")
    resolved = resolve_preopen(preopen, task.task_dir, task.alloc_dir)
    assert resolved == task.alloc_dir.resolve()


@pytest.mark.parametrize(
    "host_path",
    ["../..", "/etc", "escape", "escape/.."],
    ids=["grandparent", "absolute", "symlink", "symlink-parent"],
)
def test_resolve_preopen_outside_alloc(task: Task, host_path: str) -> None:
    (task.task_dir / "escape").symlink_to("/tmp")
    preopen = WasiPreopen(host_path=host_path, guest_path="/x")
    message = (
        f'wasi preopen host path "{host_path}" resolves to .*, which is outside '
        f'the allocation directory; it must be inside "{task.alloc_dir.resolve()}"$'
    )
    with pytest.raises(TaskError, match=message):
        resolve_preopen(preopen, task.task_dir, task.alloc_dir)


def test_resolve_preopen_missing_dir(task: Task) -> None:
    preopen = WasiPreopen(host_path="nowhere", guest_path="/x")
    with pytest.raises(TaskError, match='"nowhere" .* is not an existing directory'):
        resolve_preopen(preopen, task.task_dir, task.alloc_dir)


def test_wasi_preopen_outside_alloc_fails_task(task: Task) -> None:
    preopen = WasiPreopen(host_path="/etc", guest_path="/etc")
    with pytest.raises(TaskError, match='"/etc" resolves to "/etc", which is outside'):
        task.run(HELLO, WasiSettings(("/etc/hostname",), (preopen,)))


def test_wasi_unsupported_import_module(task: Task) -> None:
    wat = '(module (import "env" "foo" (func)) (func (export "_start")))'
    message = (
        r'module has 1 unsupported import: "env"\."foo" \(function, not from '
        r"wasi_snapshot_preview1\); the driver provides only the "
        "wasi_snapshot_preview1 functions of wasmtime$"
    )
    with pytest.raises(ModuleError, match=message):
        task.run(wat)


def test_wasi_unknown_wasi_function(task: Task) -> None:
    wat = (
        '(module (import "wasi_snapshot_preview1" "no_such_call" (func))'
        ' (func (export "_start")))'
    )
    message = (
        r'unsupported import: "wasi_snapshot_preview1"\."no_such_call" '
        r"\(function, unknown to wasmtime's WASI\)"
    )
    with pytest.raises(ModuleError, match=message):
        task.run(wat)


def test_wasi_unsupported_imports_all_listed(task: Task) -> None:
    wat = (
        '(module (import "env" "whatever" (func))'
        ' (import "wasi_snapshot_preview1" "no_such_call" (func))'
        ' (import "wasi_snapshot_preview1" "fd_write"'
        "   (func (param i32 i32 i32 i32) (result i32)))"
        ' (func (export "_start")))'
    )
    with pytest.raises(
        ModuleError, match="module has 2 unsupported imports: "
    ) as raised:
        task.run(wat)
    message = str(raised.value)
    assert '"env"."whatever" (function, not from wasi_snapshot_preview1)' in message
    assert '"wasi_snapshot_preview1"."no_such_call"' in message
    assert '"fd_write"' not in message


def test_wasi_unsupported_imports_list_bounded(task: Task) -> None:
    imports = "".join(f'(import "env" "f{i}" (func))' for i in range(25))
    wat = f'(module {imports} (func (export "_start")))'
    with pytest.raises(
        ModuleError, match="module has 25 unsupported imports: "
    ) as raised:
        task.run(wat)
    message = str(raised.value)
    assert '"env"."f9" (function' in message
    assert '"env"."f10"' not in message
    assert "and 15 more;" in message
