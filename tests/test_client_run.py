"""End-to-end tests of `wasmtime-driver run`: the real plugin, three launches.

Each test runs the command as a user would, in a subprocess with a timeout,
so a broken plugin fails the test with its stderr instead of hanging it.
`WASMTIME_DRIVER_TEST_PLUGIN` names a plugin executable to test instead of
this installation (for example `build/wasmtime-driver`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import wasmtime

from wasmtime_driver import cli
from wasmtime_driver.client import runner

REPO = Path(__file__).resolve().parents[1]
SUM_JOB = REPO / "example" / "job" / "sum.nomad"
AGENT_CONFIG = REPO / "example" / "config" / "agent.hcl"
TESTS = Path(__file__).resolve().parent
FAKE_PLUGIN = TESTS / "fake_handshake_plugin.py"
SUM_MODULE = REPO / "example" / "wasm-modules" / "sum.wasm"
SPIN_WAT = (
    '(module (func (export "spin") (result i32)'
    " (loop $again (br $again)) (i32.const 0)))"
)
# poll_oneoff with one clock subscription of an hour: the subscription at
# offset 0 has the clock's timeout (ns) at offset 24, and the event goes to 128.
SLEEP_WAT = """
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (drop (call $poll (i32.const 0) (i32.const 128) (i32.const 1) (i32.const 192)))))
"""
RUN_TIMEOUT = 90.0  # seconds; three plugin launches take a few seconds


def _command(*args: str) -> list[str]:
    command = [sys.executable, "-m", "wasmtime_driver", "run", *args]
    plugin = os.environ.get("WASMTIME_DRIVER_TEST_PLUGIN")
    if plugin and "--plugin" not in args:
        command += ["--plugin", plugin]
    return command


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            _command(*args),
            check=False,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as err:
        stderr = (err.stderr or b"").decode(errors="replace")
        pytest.fail(f"run {args} did not finish in {RUN_TIMEOUT}s; stderr:\n{stderr}")


def _explain(result: subprocess.CompletedProcess[bytes]) -> str:
    return (
        f"exit status {result.returncode}\nstdout: {result.stdout!r}\n"
        f"stderr:\n{result.stderr.decode(errors='replace')}"
    )


def _write_job(directory: Path, task_config: str, extra: str = "") -> Path:
    job = directory / "job.nomad"
    job.write_text(
        'job "test" {\n  group "g" {\n    task "t" {\n      driver = "wasmtime"\n'
        f"{extra}      config {{\n{task_config}      }}\n    }}\n  }}\n}}\n"
    )
    return job


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_sum_prints_result() -> None:
    result = _run(str(SUM_JOB))
    assert result.returncode == 0, _explain(result)
    assert result.stdout == b"802366\n", _explain(result)
    assert b'created: task "sum" (driver wasmtime)' in result.stderr
    assert result.stderr.count(b"exited") == 1, _explain(result)
    assert b'==> task "sum" exited with code 0\n' in result.stderr
    assert b"interleaved" not in result.stderr, _explain(result)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_quiet_with_agent_config() -> None:
    result = _run(str(SUM_JOB), "--config", str(AGENT_CONFIG), "-q")
    assert result.returncode == 0, _explain(result)
    assert result.stdout == b"802366\n", _explain(result)
    assert b"==>" not in result.stderr, _explain(result)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_alloc_dir_keeps_logs(tmp_path: Path) -> None:
    result = _run(str(SUM_JOB), "--alloc-dir", str(tmp_path), "-q")
    assert result.returncode == 0, _explain(result)
    (alloc,) = tmp_path.iterdir()
    logs = alloc / "alloc" / "logs"
    assert (logs / "sum.stdout.0").read_bytes() == b"802366\n"
    assert (logs / "sum.stderr.0").read_bytes() == b""
    assert (alloc / "sum" / "local").is_dir()


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_invalid_task_config(tmp_path: Path) -> None:
    job = _write_job(tmp_path, '        modulePth = "x.wasm"\n')
    result = _run(str(job))
    assert result.returncode == 1, _explain(result)
    assert result.stdout == b""
    assert b"failed to parse config" in result.stderr, _explain(result)
    assert b'named "modulePth"' in result.stderr, _explain(result)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
@pytest.mark.parametrize(
    ("task_config", "message"),
    [
        (
            f'        modulePath = "{SUM_MODULE}"\n        ioBuffer {{ size = 0 }}\n',
            b"invalid ioBuffer.size 0",
        ),
        ('        modulePath = ""\n', b'invalid modulePath ""'),
    ],
    ids=["io-buffer-size", "empty-module-path"],
)
def test_run_failed_start_quiet_logs(
    tmp_path: Path, task_config: str, message: bytes
) -> None:
    result = _run(str(_write_job(tmp_path, task_config)))
    assert result.returncode == 1, _explain(result)
    assert result.stdout == b""
    assert b'task "t" failed to start: ' in result.stderr, _explain(result)
    assert message in result.stderr, _explain(result)
    assert b"FIFO" not in result.stderr, _explain(result)
    assert b"WARN" not in result.stderr, _explain(result)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_missing_config_block_hint(tmp_path: Path) -> None:
    job = tmp_path / "job.nomad"
    job.write_text(
        'job "test" {\n  group "g" {\n    task "t" {\n'
        '      driver = "wasmtime"\n    }\n  }\n}\n'
    )
    result = _run(str(job))
    assert result.returncode == 1, _explain(result)
    assert b"Root value must be object" in result.stderr, _explain(result)
    hint = (
        b"add a config block with at least modulePath, "
        b'e.g. config { modulePath = "app.wasm" }\n'
    )
    assert result.stderr.endswith(hint), _explain(result)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_several_tasks_note(tmp_path: Path) -> None:
    task = (
        '    task "{name}" {{\n      driver = "wasmtime"\n      config {{\n'
        f'        modulePath = "{SUM_MODULE}"\n'
        '        main {{\n          mainFuncName = "sum"\n'
        "          args = [123456, 678910]\n        }}\n      }}\n    }}\n"
    )
    job = tmp_path / "job.nomad"
    job.write_text(
        'job "test" {\n  group "g" {\n'
        + task.format(name="a")
        + task.format(name="b")
        + "  }\n}\n"
    )
    result = _run(str(job))
    assert result.returncode == 0, _explain(result)
    assert result.stdout == b"802366\n802366\n", _explain(result)
    assert result.stderr.count(b"interleaved") == 1, _explain(result)
    assert b"2 tasks run at once" in result.stderr, _explain(result)
    assert b"--keep-alloc-dir" in result.stderr, _explain(result)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_invalid_plugin_config(tmp_path: Path) -> None:
    agent = tmp_path / "agent.hcl"
    agent.write_text(
        'plugin "wasmtime-driver" {\n  config {\n    cache { size = 0 }\n  }\n}\n'
    )
    result = _run(str(SUM_JOB), "--config", str(agent))
    assert result.returncode == 1, _explain(result)
    assert result.stdout == b""
    assert b"SetConfig failed" in result.stderr, _explain(result)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_failing_task_exit_status(tmp_path: Path) -> None:
    job = _write_job(
        tmp_path,
        f'        modulePath = "{REPO / "example/wasm-modules/sum.wasm"}"\n'
        '        main {\n          mainFuncName = "missing"\n        }\n',
    )
    result = _run(str(job))
    assert result.returncode != 0, _explain(result)
    assert result.stderr.count(b'task "t" failed: ') == 1, _explain(result)
    assert b"exited with code" not in result.stderr, _explain(result)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_sigint_stops_spinning_task(tmp_path: Path) -> None:
    module = tmp_path / "spin.wasm"
    module.write_bytes(wasmtime.wat2wasm(SPIN_WAT))
    job = _write_job(
        tmp_path,
        f'        modulePath = "{module}"\n'
        '        main {\n          mainFuncName = "spin"\n        }\n',
        extra='      kill_timeout = "2s"\n',
    )
    process = subprocess.Popen(
        _command(str(job)),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_start(process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        process.kill()
        process.wait()
    assert process.returncode != 0, stderr.decode(errors="replace")
    assert stdout == b""
    assert b'stopping task "t" (signal SIGINT, timeout 2s)' in stderr, stderr.decode(
        errors="replace"
    )
    assert b'task "t" killed by signal SIGINT' in stderr, stderr.decode(
        errors="replace"
    )


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_sigint_gives_up_on_blocked_task(tmp_path: Path) -> None:
    # The module sleeps an hour in the WASI poll_oneoff host call.
    module = tmp_path / "sleep.wasm"
    module.write_bytes(wasmtime.wat2wasm(SLEEP_WAT))
    job = _write_job(
        tmp_path,
        f'        modulePath = "{module}"\n',
        extra='      kill_timeout = "1s"\n      kill_signal = "SIGTERM"\n',
    )
    process = subprocess.Popen(
        _command(str(job)),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_start(process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        process.kill()
        process.wait()
    text = stderr.decode(errors="replace")
    assert process.returncode != 0, text
    assert stdout == b""
    assert b'stopping task "t" (signal SIGTERM, timeout 1s)' in stderr, text
    # A plugin that can interrupt the host call ends the task; one that
    # cannot must still let the command exit.
    stopped = b'task "t" killed by signal' in stderr
    gave_up = b'task "t" did not exit after StopTask' in stderr
    assert stopped or gave_up, text


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_plugin_crash_fails_task(tmp_path: Path) -> None:
    module = tmp_path / "spin.wasm"
    module.write_bytes(wasmtime.wat2wasm(SPIN_WAT))
    job = _write_job(
        tmp_path,
        f'        modulePath = "{module}"\n'
        '        main {\n          mainFuncName = "spin"\n        }\n',
    )
    process = subprocess.Popen(
        _command(str(job)),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_start(process)
        # The catalog and validation launches have exited by now, so the
        # only child left is the long-lived plugin.
        (plugin,) = psutil.Process(process.pid).children()
        plugin.kill()
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        process.kill()
        process.wait()
    text = stderr.decode(errors="replace")
    assert process.returncode == 1, text
    assert stdout == b""
    assert b'task "t" failed: WaitTask failed: ' in stderr, text
    assert b"Traceback" not in stderr, text


def test_run_keyboard_interrupt_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Stands in for a Ctrl-C that arrives while the run command loads.
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_command", interrupted)
    assert cli.main(["run", "job.nomad"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "==> interrupted\n"
    assert captured.out == ""


def _wait_for_start(process: subprocess.Popen[bytes]) -> None:
    """Wait for the 'started' progress line; fail if the run ends first."""
    assert process.stderr is not None
    deadline = time.monotonic() + RUN_TIMEOUT
    seen = b""
    os.set_blocking(process.stderr.fileno(), False)
    while time.monotonic() < deadline:
        chunk = process.stderr.read() or b""
        seen += chunk
        if b'task "t" started' in seen:
            os.set_blocking(process.stderr.fileno(), True)
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"the task did not start; stderr:\n{seen.decode(errors='replace')}")


def test_run_bad_handshake_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "bad-plugin"
    plugin.write_text(
        f"#!/bin/sh\nexec {sys.executable} {FAKE_PLUGIN} line '1|1|unix|/x|grpc|'\n"
    )
    plugin.chmod(0o755)
    result = _run(str(SUM_JOB), "--plugin", str(plugin))
    assert result.returncode == 1, _explain(result)
    assert b"Incompatible API version with plugin" in result.stderr, _explain(result)


def test_run_missing_job_file(tmp_path: Path) -> None:
    result = _run(str(tmp_path / "absent.nomad"))
    assert result.returncode == 1, _explain(result)
    assert b"failed to read job file" in result.stderr, _explain(result)
