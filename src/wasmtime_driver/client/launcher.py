"""Starting and stopping a plugin process the way go-plugin's client does.

One `PluginProcess` is one launch: the process gets our environment plus
go-plugin's variables, stdin from /dev/null and pipes for stdout and stderr.
Its first stdout line is the handshake; the rest of stdout is drained and
discarded, and stderr is relayed through `PluginLogRelay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from ..protocol import (
    base_pb2_grpc,
    driver_pb2_grpc,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
)
from .handshake import Handshake, HandshakeError, parse_handshake, plugin_environment
from .pluginlog import MAX_LINE_BYTES, PluginLogRelay

logger = logging.getLogger(__name__)

# go-plugin's ClientConfig.StartTimeout default, which Nomad keeps.
START_TIMEOUT = 60.0  # seconds
# go-plugin's Kill waits this long after GRPCController.Shutdown before SIGKILL.
GRACEFUL_EXIT_TIMEOUT = 2.0  # seconds
# NOTE: go-plugin waits without limit for the Shutdown reply and, after the
# SIGKILL, for EOF on the plugin's pipes. These bounds keep the command from
# hanging where a real agent would hang.
SHUTDOWN_RPC_TIMEOUT = 2.0  # seconds
PIPE_EOF_TIMEOUT = 5.0  # seconds
CONNECT_TIMEOUT = 10.0  # seconds

# The Go host sends and accepts messages up to MaxInt32 bytes and dials with
# the authority "unused".
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.default_authority", "unused"),
]


class PluginStartError(Exception):
    """The plugin process could not be started or did not complete the handshake."""


class PluginProcess:
    """One running plugin process with a gRPC channel to it."""

    def __init__(
        self,
        command: Sequence[str],
        process: asyncio.subprocess.Process,
        relay: PluginLogRelay,
        relay_task: asyncio.Task[None],
    ) -> None:
        self.command = list(command)
        self.process = process
        self.handshake: Handshake | None = None
        self.channel: grpc.aio.Channel | None = None
        self._relay = relay
        self._pipe_tasks: list[asyncio.Task[None]] = [relay_task]
        self._exit_task = asyncio.create_task(process.wait())
        self._killed = False

    @property
    def pid(self) -> int:
        return self.process.pid

    # The generated stubs are typed for grpc's blocking API. On an aio
    # channel each unary method returns an awaitable and each server stream
    # an async iterator, so callers see them untyped.
    @property
    def base(self) -> Any:
        return base_pb2_grpc.BasePluginStub(self._require_channel())

    @property
    def driver(self) -> Any:
        return driver_pb2_grpc.DriverStub(self._require_channel())

    def _require_channel(self) -> grpc.aio.Channel:
        if self.channel is None:
            raise RuntimeError("the plugin is not connected; call launch() first")
        return self.channel

    @classmethod
    async def launch(
        cls,
        command: Sequence[str],
        relay: PluginLogRelay,
        *,
        start_timeout: float = START_TIMEOUT,
        cwd: Path | None = None,
    ) -> PluginProcess:
        """Start `command`, complete the handshake and connect over gRPC.

        Raises PluginStartError (HandshakeError for a bad handshake line)
        after killing the process.
        """
        process = await _spawn(command, cwd)
        assert process.stderr is not None
        relay_task = asyncio.create_task(relay.relay_stream(process.stderr))
        plugin = cls(command, process, relay, relay_task)
        try:
            plugin.handshake = await plugin._read_handshake(start_timeout)
            plugin.channel = await _connect(plugin.handshake)
        except BaseException:
            await plugin.kill()
            raise
        logger.debug(
            "plugin started",
            extra={"pid": process.pid, "address": plugin.handshake.address},
        )
        return plugin

    async def _read_handshake(self, timeout: float) -> Handshake:
        stdout = self.process.stdout
        assert stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            line = await asyncio.wait_for(stdout.readline(), timeout)
        except TimeoutError:
            raise PluginStartError(
                "timeout while waiting for plugin to start"
            ) from None
        except ValueError as err:
            # The first line is longer than the reader's limit.
            raise HandshakeError(f"Unrecognized remote plugin message: {err}") from None
        if not line:
            await self._wait_for_exit(deadline - loop.time())
            raise PluginStartError(self._exited_message())
        self._pipe_tasks.append(asyncio.create_task(_drain(stdout)))
        return parse_handshake(line.decode("utf-8", "replace"))

    async def _wait_for_exit(self, timeout: float) -> None:
        if not await self._exited_within(max(timeout, 0.0)):
            raise PluginStartError("timeout while waiting for plugin to start")

    def _exited_message(self) -> str:
        message = "plugin exited before we could connect"
        code = self.process.returncode
        if code is not None:
            message += f" (exit status {code})"
        tail = [line for line in self._relay.tail if line]
        if tail:
            message += "; last plugin stderr lines:\n  " + "\n  ".join(tail)
        return message

    async def kill(self) -> None:
        """Stop the plugin as go-plugin's Kill does; safe to call more than once.

        Calls GRPCController.Shutdown (errors ignored), closes the channel,
        waits up to 2 s for the process to exit and close its pipes, and
        otherwise sends SIGKILL to the plugin's pid alone.
        """
        if self._killed:
            return
        self._killed = True
        graceful = False
        if self.channel is not None:
            await self._shutdown_rpc()
            await self.channel.close()
            graceful = True
        if graceful and await self._exited_within(GRACEFUL_EXIT_TIMEOUT):
            return
        if self.process.returncode is None:
            logger.warning("plugin failed to exit gracefully", extra=self._ids())
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        if not await self._exited_within(PIPE_EOF_TIMEOUT):
            logger.warning(
                "plugin pipes still open after exit: a child process inherited "
                "them, and a Nomad agent would wait for it to exit",
                extra=self._ids(),
            )
        tasks = [self._exit_task, *self._pipe_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _shutdown_rpc(self) -> None:
        assert self.channel is not None
        controller = grpc_controller_pb2_grpc.GRPCControllerStub(self.channel)
        try:
            await controller.Shutdown(
                grpc_controller_pb2.Empty(), timeout=SHUTDOWN_RPC_TIMEOUT
            )
        except grpc.RpcError as err:
            logger.debug(
                "plugin shutdown rpc failed", extra={**self._ids(), "error": str(err)}
            )

    async def _exited_within(self, timeout: float) -> bool:
        """Wait for the exit and EOF on both pipes, as go-plugin 1.6.2 does."""
        _, pending = await asyncio.wait(
            [self._exit_task, *self._pipe_tasks], timeout=timeout
        )
        return not pending

    def _ids(self) -> dict[str, object]:
        return {"pid": self.process.pid, "path": self.command[0]}


async def _spawn(
    command: Sequence[str], cwd: Path | None
) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=plugin_environment(),
            cwd=cwd,
            limit=MAX_LINE_BYTES,
        )
    except OSError as err:
        raise PluginStartError(
            f"failed to execute {command[0]!r}: {err.strerror or err}"
        ) from err


async def _connect(handshake: Handshake) -> grpc.aio.Channel:
    channel = grpc.aio.insecure_channel(handshake.grpc_target, options=CHANNEL_OPTIONS)
    try:
        await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT)
    except TimeoutError:
        await channel.close()
        raise PluginStartError(
            f"failed to connect to the plugin at {handshake.address!r}: "
            f"no connection after {CONNECT_TIMEOUT:g}s"
        ) from None
    return channel


async def _drain(stream: asyncio.StreamReader) -> None:
    """Read and discard the rest of stdout, as go-plugin does, until EOF."""
    while await stream.read(MAX_LINE_BYTES):
        pass


def plugin_display_name(command: Sequence[str]) -> str:
    """Return the logger name go-plugin would use: the executable's base name."""
    name = os.path.basename(command[0])
    if len(command) >= 3 and command[1:3] == ["-m", "wasmtime_driver"]:
        return "wasmtime-driver"
    return name
