"""Run a real plugin process over the go-plugin handshake and drive it over gRPC."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from wasmtime_driver.plugin_server import MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE
from wasmtime_driver.protocol import (
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2_grpc,
)

PLUGIN_SCRIPT = Path(__file__).with_name("noop_plugin.py")
HANDSHAKE = re.compile(r"1\|2\|unix\|(/[^|\n]+)\|grpc\|\n")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)")
HCLOG_LEVELS = {"trace", "debug", "info", "warn", "error"}

START_TIMEOUT = 30.0  # seconds until the handshake line
EXIT_TIMEOUT = 10.0  # seconds until the process has exited
RPC_TIMEOUT = 10.0


@dataclass
class PluginProcess:
    process: subprocess.Popen[bytes]
    stderr_path: Path
    handshake: str

    @property
    def socket(self) -> Path:
        match = HANDSHAKE.fullmatch(self.handshake)
        assert match is not None, self.handshake
        return Path(match.group(1))

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.socket}")

    def stderr_lines(self) -> list[str]:
        return self.stderr_path.read_text().splitlines()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(EXIT_TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()


def plugin_env(socket_root: Path, **overrides: str) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("PLUGIN_")
    }
    env.update(
        {
            MAGIC_COOKIE_KEY: MAGIC_COOKIE_VALUE,
            "PLUGIN_PROTOCOL_VERSIONS": "2",
            "PLUGIN_MIN_PORT": "10000",
            "PLUGIN_MAX_PORT": "25000",
            "PLUGIN_UNIX_SOCKET_DIR": str(socket_root),
        }
    )
    env.update(overrides)
    return {key: value for key, value in env.items() if value != ""}


def spawn(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    stderr = (tmp_path / "stderr.log").open("wb")
    with stderr:
        return subprocess.Popen(
            [sys.executable, str(PLUGIN_SCRIPT), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )


def read_until(stream: object, timeout: float, stop_at_newline: bool) -> str:
    """Read a pipe until a newline (if asked) or EOF, failing after `timeout`."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    data = b""
    deadline = time.monotonic() + timeout
    while not (stop_at_newline and data.endswith(b"\n")):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out reading plugin stdout, got {data!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


def start_plugin(tmp_path: Path, env: dict[str, str], *args: str) -> PluginProcess:
    process = spawn(tmp_path, env, *args)
    handshake = read_until(process.stdout, START_TIMEOUT, stop_at_newline=True)
    return PluginProcess(process, tmp_path / "stderr.log", handshake)


def shutdown(plugin: PluginProcess) -> grpc_controller_pb2.Empty:
    with plugin.channel() as channel:
        stub = grpc_controller_pb2_grpc.GRPCControllerStub(channel)
        return stub.Shutdown(grpc_controller_pb2.Empty(), timeout=RPC_TIMEOUT)


def health_status(plugin: PluginProcess, service: str) -> int:
    with plugin.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        # types-grpcio-health-checking declares HealthStub without methods.
        check = stub.Check  # type: ignore[attr-defined]
        response = check(request, timeout=RPC_TIMEOUT)
        assert isinstance(response, health_pb2.HealthCheckResponse)
        return response.status


def wait_for_exit(process: psutil.Process, timeout: float) -> bool:
    """Wait until a process that is not our child has exited or is a zombie."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def assert_hclog_lines(lines: list[str]) -> None:
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert isinstance(entry["@message"], str), line
        assert entry["@level"] in HCLOG_LEVELS, line
        assert TIMESTAMP.fullmatch(entry["@timestamp"]), line
        assert isinstance(entry["@module"], str), line


def messages(lines: list[str]) -> list[str]:
    return [json.loads(line)["@message"] for line in lines]


@pytest.fixture
def socket_root() -> Iterator[Path]:
    # A short directory, because unix socket paths are limited to 107 bytes
    # and pytest's tmp_path can be longer than that.
    root = Path(tempfile.mkdtemp(prefix="pst"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def plugin(tmp_path: Path, socket_root: Path) -> Iterator[PluginProcess]:
    started = start_plugin(tmp_path, plugin_env(socket_root))
    yield started
    started.close()


def test_plugin_server_handshake_line(plugin: PluginProcess, socket_root: Path) -> None:
    assert HANDSHAKE.fullmatch(plugin.handshake), plugin.handshake
    assert len(os.fsencode(plugin.socket)) < 108
    assert stat.S_ISSOCK(plugin.socket.stat().st_mode)
    assert plugin.socket.parent.parent == socket_root
    assert plugin.socket.parent.name.startswith("plugin")
    assert stat.S_IMODE(plugin.socket.parent.stat().st_mode) == 0o700


def test_plugin_server_health_serving(plugin: PluginProcess) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_status(plugin, "plugin") == serving
    assert health_status(plugin, "") == serving


def test_plugin_server_shutdown_exits_cleanly(plugin: PluginProcess) -> None:
    reply = shutdown(plugin)

    assert reply == grpc_controller_pb2.Empty()
    assert plugin.process.wait(EXIT_TIMEOUT) == 0
    assert not plugin.socket.exists()
    assert not plugin.socket.parent.exists()
    rest = read_until(plugin.process.stdout, EXIT_TIMEOUT, stop_at_newline=False)
    assert rest == ""


def test_plugin_server_stderr_is_hclog(plugin: PluginProcess) -> None:
    shutdown(plugin)
    plugin.process.wait(EXIT_TIMEOUT)

    lines = plugin.stderr_lines()
    assert_hclog_lines(lines)
    logged = messages(lines)
    assert "plugin started" in logged
    assert "plugin stopped" in logged
    assert "exiting with threads still running" not in logged
    # The stray writes in the test plugin reached stderr, not stdout.
    assert "stray output from print" in logged
    assert "stray output from fd 1" in logged
    started = next(json.loads(x) for x in lines if "plugin started" in x)
    assert started["@level"] == "info"
    assert started["pid"] == plugin.process.pid
    assert started["socket"] == str(plugin.socket)


def test_plugin_server_stdio_stream_empty(plugin: PluginProcess) -> None:
    with plugin.channel() as channel:
        stub = grpc_stdio_pb2_grpc.GRPCStdioStub(channel)
        stream = stub.StreamStdio(empty_pb2.Empty(), timeout=RPC_TIMEOUT * 3)
        shutdown(plugin)
        received = list(stream)

    assert received == []
    assert plugin.process.wait(EXIT_TIMEOUT) == 0


def test_plugin_server_ignores_sigint(plugin: PluginProcess) -> None:
    plugin.process.send_signal(signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):
        plugin.process.wait(1.0)

    assert health_status(plugin, "plugin") == health_pb2.HealthCheckResponse.SERVING
    shutdown(plugin)
    assert plugin.process.wait(EXIT_TIMEOUT) == 0


def test_plugin_server_sigterm_exits_cleanly(plugin: PluginProcess) -> None:
    plugin.process.terminate()

    assert plugin.process.wait(EXIT_TIMEOUT) == 0
    assert not plugin.socket.parent.exists()


@pytest.mark.parametrize("cookie", ["", "not-the-cookie"], ids=["missing", "wrong"])
def test_plugin_server_rejects_bad_cookie(
    tmp_path: Path, socket_root: Path, cookie: str
) -> None:
    env = plugin_env(socket_root, **{MAGIC_COOKIE_KEY: cookie})
    process = spawn(tmp_path, env)
    stdout, _ = process.communicate(timeout=START_TIMEOUT)

    assert process.returncode == 1
    assert stdout == b""
    stderr = (tmp_path / "stderr.log").read_text()
    assert "usage: noop_plugin.py" in stderr
    assert "started by a Nomad client agent" in stderr
    assert list(socket_root.iterdir()) == []


def test_plugin_server_rejects_protocol_version(
    tmp_path: Path, socket_root: Path
) -> None:
    env = plugin_env(socket_root, PLUGIN_PROTOCOL_VERSIONS="1")
    process = spawn(tmp_path, env)
    stdout, _ = process.communicate(timeout=START_TIMEOUT)

    assert process.returncode == 1
    assert stdout == b""
    stderr = (tmp_path / "stderr.log").read_text()
    assert "unsupported PLUGIN_PROTOCOL_VERSIONS '1'" in stderr


def test_plugin_server_accepts_version_list(tmp_path: Path, socket_root: Path) -> None:
    env = plugin_env(socket_root, PLUGIN_PROTOCOL_VERSIONS="1, 2")
    started = start_plugin(tmp_path, env)
    try:
        shutdown(started)
        assert HANDSHAKE.fullmatch(started.handshake)
        assert started.process.wait(EXIT_TIMEOUT) == 0
    finally:
        started.close()


def test_plugin_server_rejects_long_socket_dir(
    tmp_path: Path, socket_root: Path
) -> None:
    long_dir = socket_root / ("d" * 100)
    long_dir.mkdir()
    process = spawn(
        tmp_path, plugin_env(socket_root, PLUGIN_UNIX_SOCKET_DIR=str(long_dir))
    )
    stdout, _ = process.communicate(timeout=START_TIMEOUT)

    assert process.returncode == 1
    assert stdout == b""
    lines = (tmp_path / "stderr.log").read_text().splitlines()
    assert_hclog_lines(lines)
    failure = next(json.loads(x) for x in lines if "failed to start plugin" in x)
    assert failure["@level"] == "error"
    assert "PLUGIN_UNIX_SOCKET_DIR" in failure["error"]
    assert list(long_dir.iterdir()) == []


def test_plugin_server_missing_socket_dir(tmp_path: Path, socket_root: Path) -> None:
    missing = socket_root / "missing"
    env = plugin_env(socket_root, PLUGIN_UNIX_SOCKET_DIR=str(missing))
    process = spawn(tmp_path, env)
    stdout, _ = process.communicate(timeout=START_TIMEOUT)

    assert process.returncode == 1
    assert stdout == b""
    lines = (tmp_path / "stderr.log").read_text().splitlines()
    assert_hclog_lines(lines)
    failure = next(json.loads(x) for x in lines if "socket directory" in x)
    assert failure["@message"] == "failed to create the socket directory"
    assert failure["dir"] == str(missing)


def test_plugin_server_exits_when_parent_dies(
    tmp_path: Path, socket_root: Path
) -> None:
    started = start_plugin(tmp_path, plugin_env(socket_root), "--spawn")
    try:
        check_orphan_exits(started)
    finally:
        started.close()


def check_orphan_exits(started: PluginProcess) -> None:
    intermediate = started.process
    children = psutil.Process(intermediate.pid).children()
    assert len(children) == 1
    plugin_process = children[0]

    intermediate.kill()
    intermediate.wait(EXIT_TIMEOUT)
    # EOF on the shared stdout pipe means the orphaned plugin closed it too.
    rest = read_until(intermediate.stdout, EXIT_TIMEOUT, stop_at_newline=False)

    assert rest == ""
    assert wait_for_exit(plugin_process, EXIT_TIMEOUT)
    assert not started.socket.parent.exists()
    logged = messages(started.stderr_lines())
    assert "plugin host exited, shutting down" in logged
    assert "plugin stopped" in logged


def test_plugin_server_runs_shutdown_hooks(tmp_path: Path, socket_root: Path) -> None:
    started = start_plugin(tmp_path, plugin_env(socket_root), "--hooks")
    try:
        shutdown(started)
        assert started.process.wait(EXIT_TIMEOUT) == 0
    finally:
        started.close()

    lines = started.stderr_lines()
    assert_hclog_lines(lines)
    logged = messages(lines)
    assert "shutdown hook ran" in logged
    assert "shutdown hook timed out" in logged
    timed_out = next(json.loads(x) for x in lines if "shutdown hook timed out" in x)
    assert timed_out["hook"] == "hanging_hook"
    assert logged.index("shutdown hook ran") < logged.index("plugin stopped")


def test_plugin_server_exits_despite_stuck_thread(
    tmp_path: Path, socket_root: Path
) -> None:
    started = start_plugin(tmp_path, plugin_env(socket_root), "--stuck-thread")
    try:
        shutdown(started)
        assert started.process.wait(EXIT_TIMEOUT) == 0
    finally:
        started.close()

    lines = started.stderr_lines()
    assert_hclog_lines(lines)
    lingering = next(json.loads(x) for x in lines if "threads still running" in x)
    assert lingering["threads"] == ["stuck"]
