"""The plugin launches a Nomad 1.6 to 1.9 client makes before it runs a task.

1. Catalog probe: PluginInfo and ConfigSchema, then Kill.
2. Config validation (only when ConfigSchema returned a spec): SetConfig with
   the agent's plugin config and no nomad_config, then Kill.
3. The long-lived instance: SetConfig with nomad_config, the Fingerprint and
   TaskEvents streams opened together, the first fingerprint awaited, then
   TaskConfigSchema and Capabilities.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from .. import hclspec
from ..convert import spec_from_proto
from ..ctymsgpack import marshal
from ..hcldec import DecodeError, InvalidSpecError, decode
from ..protocol import base_pb2, driver_pb2
from .agentconfig import AgentConfig
from .handshake import HandshakeError
from .launcher import PluginProcess, PluginStartError
from .pluginlog import PluginLogRelay
from .rpcerror import describe_rpc_error

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The only plugin API version Nomad 1.6 to 1.9 speaks.
PLUGIN_API_VERSION = "v0.1.0"
# How long Nomad's driver manager waits for a driver's first fingerprint.
FIRST_FINGERPRINT_TIMEOUT = 55.0  # seconds
# NOTE: Nomad re-opens an ended Fingerprint or TaskEvents stream at once; the
# pause keeps a broken plugin from spinning this process.
STREAM_REOPEN_DELAY = 1.0  # seconds

_VERSION = re.compile(
    r"v?(?P<segments>\d+(?:\.\d+)*)(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?"
)

EventCallback = Callable[[driver_pb2.DriverTaskEvent], None]
HealthCallback = Callable[[driver_pb2.FingerprintResponse], None]


class ClientError(Exception):
    """A failure the run command reports to the user and exits on."""


@dataclass(frozen=True)
class CatalogEntry:
    """The plugin facts the catalog probe collects."""

    name: str
    plugin_version: str
    api_version: str
    config_spec: hclspec.Spec | None


def parse_version(text: str) -> tuple[tuple[int, ...], str] | None:
    """Parse a version as hashicorp/go-version does; None when it is invalid.

    Returns the numeric segments padded to three and the prerelease text.
    """
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        return None
    segments = tuple(int(part) for part in match.group("segments").split("."))
    return segments + (0,) * (3 - len(segments)), match.group("pre") or ""


async def probe_catalog(command: Sequence[str], relay: PluginLogRelay) -> CatalogEntry:
    """Run launch 1: PluginInfo and ConfigSchema, then kill the plugin."""
    plugin = await _launch(command, relay)
    try:
        info: base_pb2.PluginInfoResponse = await _call(
            "PluginInfo", plugin.base.PluginInfo(base_pb2.PluginInfoRequest())
        )
        api_version = _check_plugin_info(info)
        schema: base_pb2.ConfigSchemaResponse = await _call(
            "ConfigSchema", plugin.base.ConfigSchema(base_pb2.ConfigSchemaRequest())
        )
    finally:
        await plugin.kill()
    config_spec = spec_from_proto(schema.spec) if schema.HasField("spec") else None
    return CatalogEntry(info.name, info.plugin_version, api_version, config_spec)


def _check_plugin_info(info: base_pb2.PluginInfoResponse) -> str:
    if info.type != base_pb2.PluginType.DRIVER:
        type_name = _plugin_type_name(info.type)
        raise ClientError(
            f"plugin {info.name!r} is of type {type_name}, not DRIVER: "
            "only driver plugins can run tasks"
        )
    if parse_version(info.plugin_version) is None:
        raise ClientError(
            f"plugin {info.name!r} reports an invalid plugin_version "
            f"{info.plugin_version!r}: a Nomad agent would fail to start"
        )
    expected = parse_version(PLUGIN_API_VERSION)
    for version in info.plugin_api_versions:
        parsed = parse_version(version)
        if parsed is None:
            raise ClientError(
                f"plugin {info.name!r} reports an invalid plugin API version "
                f"{version!r}: a Nomad agent would fail to start"
            )
        if parsed == expected:
            return version
    raise ClientError(
        f"plugin {info.name!r} supports plugin API versions "
        f"{list(info.plugin_api_versions)}, none of which is {PLUGIN_API_VERSION}: "
        "a Nomad agent would skip it"
    )


def _plugin_type_name(value: int) -> str:
    try:
        return base_pb2.PluginType.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return str(value)


def encode_plugin_config(entry: CatalogEntry, agent: AgentConfig) -> bytes:
    """Encode the agent's plugin config against the plugin's ConfigSchema."""
    if entry.config_spec is None:
        if agent.plugin_config_given:
            raise ClientError(
                f"plugin {entry.name!r}: configuration not allowed but config passed"
            )
        return b""
    try:
        value = decode(entry.config_spec, agent.plugin_config, None)
    except (DecodeError, InvalidSpecError) as err:
        raise ClientError(
            f"failed to parse config for plugin {entry.name!r}: {err}"
        ) from err
    return marshal(value)


async def validate_config(
    command: Sequence[str], relay: PluginLogRelay, entry: CatalogEntry, config: bytes
) -> None:
    """Run launch 2: SetConfig without nomad_config, then kill the plugin."""
    plugin = await _launch(command, relay)
    try:
        request = base_pb2.SetConfigRequest(
            msgpack_config=config, plugin_api_version=entry.api_version
        )
        await _call("SetConfig", plugin.base.SetConfig(request))
    finally:
        await plugin.kill()


class DriverInstance:
    """Launch 3: the long-lived plugin process with its two streams open."""

    def __init__(
        self,
        plugin: PluginProcess,
        on_event: EventCallback,
        on_health_change: HealthCallback,
    ) -> None:
        self.plugin = plugin
        self.driver = plugin.driver
        self.first_fingerprint: asyncio.Future[driver_pb2.FingerprintResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self.task_config_spec: hclspec.Spec | None = None
        self.capabilities = driver_pb2.DriverCapabilities()
        self._on_event = on_event
        self._on_health_change = on_health_change
        self._streams: list[asyncio.Task[None]] = []

    def open_streams(self) -> None:
        """Open Fingerprint and TaskEvents concurrently, as Nomad does."""
        self._streams = [
            asyncio.create_task(self._follow_fingerprints()),
            asyncio.create_task(self._follow_events()),
        ]

    async def close(self) -> None:
        """Cancel both streams and kill the plugin as go-plugin does."""
        for stream in self._streams:
            stream.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)
        await self.plugin.kill()

    async def _follow_fingerprints(self) -> None:
        last_health: int | None = None
        while True:
            call = self.driver.Fingerprint(driver_pb2.FingerprintRequest())
            try:
                async for fingerprint in call:
                    if not self.first_fingerprint.done():
                        self.first_fingerprint.set_result(fingerprint)
                    elif fingerprint.health != last_health:
                        self._on_health_change(fingerprint)
                    last_health = fingerprint.health
            except grpc.aio.AioRpcError as err:
                self._stream_failed("Fingerprint", err)
            else:
                self._stream_failed("Fingerprint", None)
            finally:
                call.cancel()
            await asyncio.sleep(STREAM_REOPEN_DELAY)

    async def _follow_events(self) -> None:
        while True:
            call = self.driver.TaskEvents(driver_pb2.TaskEventsRequest())
            try:
                async for event in call:
                    self._on_event(event)
            except grpc.aio.AioRpcError as err:
                self._stream_failed("TaskEvents", err)
            else:
                self._stream_failed("TaskEvents", None)
            finally:
                call.cancel()
            await asyncio.sleep(STREAM_REOPEN_DELAY)

    def _stream_failed(self, rpc: str, err: grpc.aio.AioRpcError | None) -> None:
        reason = describe_rpc_error(err) if err is not None else "the stream ended"
        if not self.first_fingerprint.done() and rpc == "Fingerprint":
            self.first_fingerprint.set_exception(
                ClientError(f"failed to fingerprint driver: {reason}")
            )
        logger.warning(
            "plugin stream failed; a Nomad client re-opens it at once",
            extra={"rpc": rpc, "error": reason},
        )


async def start_instance(
    command: Sequence[str],
    relay: PluginLogRelay,
    entry: CatalogEntry,
    config: bytes,
    agent: AgentConfig,
    on_event: EventCallback,
    on_health_change: HealthCallback,
) -> DriverInstance:
    """Run launch 3 up to a healthy driver with its schema and capabilities."""
    plugin = await _launch(command, relay)
    instance = DriverInstance(plugin, on_event, on_health_change)
    try:
        await _set_config(instance, entry, config, agent)
        instance.open_streams()
        await _wait_until_healthy(instance, entry.name)
        schema: driver_pb2.TaskConfigSchemaResponse = await _call(
            "TaskConfigSchema",
            instance.driver.TaskConfigSchema(driver_pb2.TaskConfigSchemaRequest()),
        )
        instance.task_config_spec = _task_spec(schema, entry.name)
        capabilities: driver_pb2.CapabilitiesResponse = await _call(
            "Capabilities",
            instance.driver.Capabilities(driver_pb2.CapabilitiesRequest()),
        )
        instance.capabilities = capabilities.capabilities
    except BaseException:
        await instance.close()
        raise
    return instance


async def _set_config(
    instance: DriverInstance, entry: CatalogEntry, config: bytes, agent: AgentConfig
) -> None:
    driver_config = base_pb2.NomadDriverConfig(
        ClientMinPort=agent.client_min_port, ClientMaxPort=agent.client_max_port
    )
    request = base_pb2.SetConfigRequest(
        msgpack_config=config,
        nomad_config=base_pb2.NomadConfig(driver=driver_config),
        plugin_api_version=entry.api_version,
    )
    await _call("SetConfig", instance.plugin.base.SetConfig(request))


async def _wait_until_healthy(instance: DriverInstance, name: str) -> None:
    try:
        fingerprint = await asyncio.wait_for(
            asyncio.shield(instance.first_fingerprint), FIRST_FINGERPRINT_TIMEOUT
        )
    except TimeoutError:
        raise ClientError(
            f"driver {name!r} sent no fingerprint within {FIRST_FINGERPRINT_TIMEOUT:g}s"
        ) from None
    health = driver_pb2.FingerprintResponse.HealthState
    if fingerprint.health != health.HEALTHY:
        state = health.Name(fingerprint.health).lower()
        description = fingerprint.health_description or "no description"
        raise ClientError(f"driver {name!r} is {state}: {description}")


def _task_spec(schema: driver_pb2.TaskConfigSchemaResponse, name: str) -> hclspec.Spec:
    if not schema.HasField("spec"):
        raise ClientError(f"driver {name!r} returned a nil TaskConfigSchema spec")
    return spec_from_proto(schema.spec)


async def _launch(command: Sequence[str], relay: PluginLogRelay) -> PluginProcess:
    try:
        return await PluginProcess.launch(command, relay)
    except (PluginStartError, HandshakeError) as err:
        raise ClientError(f"failed to start plugin: {err}") from err


async def _call(rpc: str, call: Awaitable[T]) -> T:
    """Await one unary RPC, turning a gRPC error into a ClientError."""
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        raise ClientError(f"{rpc} failed: {describe_rpc_error(err)}") from err
