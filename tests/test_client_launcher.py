"""Tests for starting plugin processes as go-plugin's client does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from wasmtime_driver.client.handshake import (
    HandshakeError,
    parse_handshake,
    plugin_environment,
)
from wasmtime_driver.client.launcher import PluginProcess, PluginStartError
from wasmtime_driver.client.pluginlog import PluginLogRelay

TESTS = Path(__file__).resolve().parent
FAKE_PLUGIN = TESTS / "fake_handshake_plugin.py"
NOOP_PLUGIN = TESTS / "noop_plugin.py"
COOKIE = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"


class Collected:
    """A relay writer that keeps what it was given."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(text)


def test_handshake_good_line() -> None:
    handshake = parse_handshake("1|2|unix|/tmp/plugin1/plugin.sock|grpc|\n")
    assert handshake.network == "unix"
    assert handshake.address == "/tmp/plugin1/plugin.sock"
    assert handshake.protocol == "grpc"
    assert handshake.grpc_target == "unix:/tmp/plugin1/plugin.sock"


def test_handshake_tcp_without_trailing_pipe() -> None:
    handshake = parse_handshake("1|2|tcp|127.0.0.1:5003|grpc")
    assert handshake.grpc_target == "127.0.0.1:5003"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("hello world", "Unrecognized remote plugin message: hello world"),
        ("x|2|unix|/s|grpc|", "Error parsing core protocol version"),
        ("2|2|unix|/s|grpc|", "Incompatible core API version with plugin"),
        ("1|1|unix|/s|grpc|", r"Plugin version: 1, Client versions: \[2\]"),
        ("1|two|unix|/s|grpc|", 'Error parsing protocol version "two"'),
        ("1|2|unix|/s", "Unsupported plugin protocol 'netrpc'"),
        ("1|2|unix|/s|netrpc|", "Unsupported plugin protocol 'netrpc'"),
        ("1|2|pipe|/s|grpc|", "Unknown address type: /s"),
        ("1|2|tcp|nowhere|grpc|", "invalid tcp address 'nowhere'"),
        ("1|2|unix|/s|grpc|" + "A" * 60, "error parsing server cert"),
    ],
    ids=[
        "garbage",
        "core-not-a-number",
        "core-version",
        "app-version",
        "app-not-a-number",
        "protocol-missing",
        "protocol-netrpc",
        "network",
        "tcp-address",
        "certificate",
    ],
)
def test_handshake_invalid_lines(line: str, message: str) -> None:
    with pytest.raises(HandshakeError, match=message):
        parse_handshake(line)


def test_handshake_environment_adds_go_plugin_variables() -> None:
    env = plugin_environment({"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert env["NOMAD_PLUGIN_MAGIC_COOKIE"] == COOKIE
    assert env["PLUGIN_PROTOCOL_VERSIONS"] == "2"
    assert env["PLUGIN_MIN_PORT"] == "10000"
    assert env["PLUGIN_MAX_PORT"] == "25000"


@pytest.mark.asyncio
async def test_launcher_bad_handshake_kills_plugin() -> None:
    relay = PluginLogRelay("fake", write=Collected())
    command = [sys.executable, str(FAKE_PLUGIN), "line", "1|1|unix|/nowhere|grpc|"]
    with pytest.raises(HandshakeError, match="Incompatible API version with plugin"):
        await PluginProcess.launch(command, relay, start_timeout=30)


@pytest.mark.asyncio
async def test_launcher_exit_before_handshake() -> None:
    relay = PluginLogRelay("fake", write=Collected())
    command = [sys.executable, str(FAKE_PLUGIN), "exit"]
    with pytest.raises(PluginStartError) as caught:
        await PluginProcess.launch(command, relay, start_timeout=30)
    message = str(caught.value)
    assert message.startswith("plugin exited before we could connect")
    assert "exit status 3" in message
    assert "fake plugin: refusing to start" in message


@pytest.mark.asyncio
async def test_launcher_start_timeout() -> None:
    relay = PluginLogRelay("fake", write=Collected())
    command = [sys.executable, str(FAKE_PLUGIN), "silent"]
    with pytest.raises(PluginStartError, match="timeout while waiting for plugin"):
        await PluginProcess.launch(command, relay, start_timeout=0.5)


@pytest.mark.asyncio
async def test_launcher_missing_executable(tmp_path: Path) -> None:
    relay = PluginLogRelay("fake", write=Collected())
    with pytest.raises(PluginStartError, match="failed to execute .*absent"):
        await PluginProcess.launch([str(tmp_path / "absent")], relay)


@pytest.mark.asyncio
async def test_launcher_good_handshake_and_graceful_kill() -> None:
    collected = Collected()
    relay = PluginLogRelay("noop_plugin", level="debug", write=collected)
    plugin = await PluginProcess.launch([sys.executable, str(NOOP_PLUGIN)], relay)
    assert plugin.handshake is not None
    assert plugin.handshake.network == "unix"
    assert Path(plugin.handshake.address).is_socket()
    await plugin.kill()
    # Shutdown over GRPCController made the plugin exit by itself.
    assert plugin.process.returncode == 0
    assert not Path(plugin.handshake.address).exists()
    relayed = "".join(collected.lines)
    assert "[DEBUG] noop_plugin: stray output from print" in relayed
    await plugin.kill()  # a second kill is a no-op


@pytest.mark.asyncio
async def test_launcher_relay_hides_lines_below_level() -> None:
    collected = Collected()
    relay = PluginLogRelay("noop_plugin", level="warn", write=collected)
    plugin = await PluginProcess.launch([sys.executable, str(NOOP_PLUGIN)], relay)
    await plugin.kill()
    assert not any("stray output" in line for line in collected.lines)
    assert any("stray output" in line for line in relay.tail)
