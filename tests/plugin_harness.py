"""Start the real plugin over the go-plugin handshake and talk to it over gRPC.

The tests use this in place of a Nomad client: the plugin is the executable
`make build` writes, started with the magic cookie, and every call crosses the
real unix socket.
"""

from __future__ import annotations

import os
import secrets
import select
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import msgpack
import psutil

from wasmtime_driver.protocol import (
    base_pb2,
    base_pb2_grpc,
    driver_pb2,
    driver_pb2_grpc,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
)

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "build" / "wasmtime-driver"
COOKIE = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"
HANDSHAKE_TIMEOUT = 60.0


@dataclass
class Plugin:
    """A running plugin process and stubs for its services."""

    process: subprocess.Popen[bytes]
    socket_path: str
    channel: grpc.Channel
    base: base_pb2_grpc.BasePluginStub
    driver: driver_pb2_grpc.DriverStub
    stderr_lines: list[str] = field(default_factory=list)
    stderr_reader: threading.Thread | None = None

    def shutdown(self, timeout: float = 5.0) -> int:
        controller = grpc_controller_pb2_grpc.GRPCControllerStub(self.channel)
        try:
            controller.Shutdown(grpc_controller_pb2.Empty(), timeout=timeout)
        except grpc.RpcError:
            pass  # the process may exit before the reply arrives
        self.channel.close()
        code = self.process.wait(timeout)
        self.close_pipes()
        return code

    def close_pipes(self) -> None:
        if self.stderr_reader is not None:
            self.stderr_reader.join(5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def start_plugin(env: dict[str, str] | None = None, cwd: Path = REPO) -> Plugin:
    if not PLUGIN.exists():
        raise RuntimeError(f"{PLUGIN} is missing: run `make build` first")
    environment = dict(os.environ)
    environment.update(
        {
            "NOMAD_PLUGIN_MAGIC_COOKIE": COOKIE,
            "PLUGIN_PROTOCOL_VERSIONS": "2",
            "PLUGIN_MIN_PORT": "10000",
            "PLUGIN_MAX_PORT": "25000",
        }
    )
    environment.update(env or {})
    process = subprocess.Popen(
        [str(PLUGIN)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=cwd,
    )
    line = _read_handshake(process)
    core, app, network, address, protocol, *_ = line.split("|")
    assert (core, app, network, protocol) == ("1", "2", "unix", "grpc"), line
    channel = grpc.insecure_channel(f"unix:{address}")
    grpc.channel_ready_future(channel).result(timeout=10)
    plugin = Plugin(
        process,
        address,
        channel,
        base_pb2_grpc.BasePluginStub(channel),
        driver_pb2_grpc.DriverStub(channel),
    )
    plugin.stderr_reader = threading.Thread(
        target=_collect_stderr, args=(plugin,), daemon=True
    )
    plugin.stderr_reader.start()
    return plugin


def _read_handshake(process: subprocess.Popen[bytes]) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], HANDSHAKE_TIMEOUT)
    if not ready:
        process.kill()
        raise RuntimeError("plugin printed no handshake line")
    line = process.stdout.readline().decode().strip()
    if not line:
        process.wait(5)
        assert process.stderr is not None
        raise RuntimeError(f"plugin exited: {process.stderr.read().decode()}")
    return line


def _collect_stderr(plugin: Plugin) -> None:
    assert plugin.process.stderr is not None
    for raw in plugin.process.stderr:
        plugin.stderr_lines.append(raw.decode(errors="replace").rstrip("\n"))


def configure(
    plugin: Plugin, cache: dict[str, Any] | None = None, isolation: str | None = None
) -> None:
    """Send SetConfig as the long-lived instance gets it."""
    config: dict[str, Any] = {
        "cache": {
            "enabled": True,
            "type": "lfu",
            "size": 5,
            "expiration": {"enabled": True, "entryTTL": 600},
            "preCache": {"enabled": False},
            "dir": None,
        }
    }
    config["cache"].update(cache or {})
    if isolation is not None:
        config["isolation"] = isolation
    nomad_config = base_pb2.NomadConfig(
        driver=base_pb2.NomadDriverConfig(ClientMinPort=14000, ClientMaxPort=14512)
    )
    plugin.base.SetConfig(
        base_pb2.SetConfigRequest(
            msgpack_config=msgpack.packb(config),
            nomad_config=nomad_config,
            plugin_api_version="v0.1.0",
        ),
        timeout=60,
    )


def task_config_bytes(
    module_path: str,
    func: str = "handle_buffer",
    args: list[Any] | None = None,
    io_buffer: dict[str, Any] | None = None,
) -> bytes:
    """Encode a task config in the shape go-cty gives Nomad's decoded value."""
    value = {
        "ioBuffer": io_buffer or {"enabled": False},
        "main": {"args": args, "mainFuncName": func},
        "modulePath": module_path,
        "wasi": None,
    }
    return msgpack.packb(value)


@dataclass
class AllocDir:
    """An allocation directory laid out as Nomad's client lays it out."""

    root: Path
    task: str
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    _readers: list[threading.Thread] = field(default_factory=list)

    @property
    def stdout_path(self) -> Path:
        return self.root / "alloc" / "logs" / f".{self.task}.stdout.fifo"

    @property
    def stderr_path(self) -> Path:
        return self.root / "alloc" / "logs" / f".{self.task}.stderr.fifo"

    def create(self) -> AllocDir:
        for sub in ("alloc/logs", "alloc/data", "alloc/tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("local", "secrets", "private", "tmp"):
            (self.root / self.task / sub).mkdir(parents=True, exist_ok=True)
        for path, sink in (
            (self.stdout_path, self.stdout),
            (self.stderr_path, self.stderr),
        ):
            os.mkfifo(path, 0o600)
            reader = threading.Thread(target=_drain, args=(path, sink), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    def wait_for_eof(self, timeout: float = 10.0) -> None:
        for reader in self._readers:
            reader.join(timeout)
            assert not reader.is_alive(), "log FIFO never reached EOF"


def _drain(path: Path, sink: bytearray) -> None:
    # Like logmon: open for reading (blocks until the driver opens it for
    # writing) and copy until EOF.
    with open(path, "rb", buffering=0) as fifo:
        while chunk := fifo.read(65536):
            sink.extend(chunk)


def task_request(
    alloc: AllocDir, driver_config: bytes, env: dict[str, str] | None = None
) -> driver_pb2.StartTaskRequest:
    alloc_id = str(uuid.uuid4())
    task = driver_pb2.TaskConfig(
        id=f"{alloc_id}/{alloc.task}/{secrets.token_hex(4)}",
        name=alloc.task,
        alloc_id=alloc_id,
        job_name="test",
        job_id="test",
        task_group_name="group",
        namespace="default",
        alloc_dir=str(alloc.root),
        stdout_path=str(alloc.stdout_path),
        stderr_path=str(alloc.stderr_path),
        msgpack_driver_config=driver_config,
        env=env or {"NOMAD_TASK_NAME": alloc.task},
    )
    return driver_pb2.StartTaskRequest(task=task)


def iterate(stream: Any, count: int) -> Iterator[Any]:
    for index, item in enumerate(stream):
        yield item
        if index + 1 >= count:
            stream.cancel()
            return


def wait_until_exited(pid: int, timeout: float = 30.0) -> None:
    """Wait until process `pid` has exited; a zombie counts as exited.

    A task process whose parent has gone may never be reaped, and the zygote
    reaps its children on its own schedule.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still runs")
