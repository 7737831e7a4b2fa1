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

import pytest
import wasmtime

REPO = Path(__file__).resolve().parents[1]
SUM_JOB = REPO / "example" / "job" / "sum.nomad"
AGENT_CONFIG = REPO / "example" / "config" / "agent.hcl"
TESTS = Path(__file__).resolve().parent
FAKE_PLUGIN = TESTS / "fake_handshake_plugin.py"
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
    assert b'task "t" failed: ' in result.stderr, _explain(result)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_run_sigint_stops_spinning_task(tmp_path: Path) -> None:
    module = tmp_path / "spin.wasm"
    module.write_bytes(
        wasmtime.wat2wasm(
            '(module (func (export "spin") (result i32)'
            " (loop $again (br $again)) (i32.const 0)))"
        )
    )
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
    assert b'stopping task "t"' in stderr, stderr.decode(errors="replace")


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
