"""Nomad's BasePlugin and Driver gRPC services.

Each method converts the request, makes one call into the driver or its task
manager, and converts the response back. Errors become gRPC statuses in
`_abort`, the one place that maps them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import msgpack
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from . import __version__
from .config import plugin_config_spec, task_config_spec
from .convert import (
    exit_result_to_proto,
    spec_to_proto,
    task_event_to_proto,
    task_request_from_proto,
    task_stats_to_proto,
    task_status_to_proto,
)
from .driver import (
    DRIVER_NAME,
    FINGERPRINT_INTERVAL,
    PLUGIN_API_VERSIONS,
    Fingerprint,
    WasmtimeDriver,
)
from .errors import ConfigError, DriverError, TaskNotFoundError
from .handle import TASK_HANDLE_VERSION, TaskHandle
from .logfiles import LogOpenError
from .protocol import (
    attribute_pb2,
    base_pb2,
    base_pb2_grpc,
    driver_pb2,
    driver_pb2_grpc,
    recoverable_error_pb2,
)
from .settings import TaskConfig

log = logging.getLogger(__name__)

# Nomad's default telemetry collection_interval, for a request that sets none.
DEFAULT_STATS_INTERVAL = 1.0

Context = grpc.aio.ServicerContext[Any, Any]
Response = TypeVar("Response")
Method = Callable[..., Awaitable[Response]]


def _translating_errors(method: Method[Response]) -> Method[Response]:
    """Turn the driver's exceptions into gRPC statuses for a unary method."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> Response:
        try:
            return await method(self, request, context)
        except (DriverError, ValueError) as err:
            await _abort(context, err, method.__name__)
            raise  # unreachable: abort raises

    return wrapper


async def _abort(context: Context, err: Exception, rpc: str) -> None:
    if isinstance(err, LogOpenError):
        # Nomad restarts a task whose start failed with this detail, per
        # the job's restart policy; logmon may simply not be ready yet.
        await _abort_recoverable(context, str(err))
    if isinstance(err, TaskNotFoundError):
        await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
    if isinstance(err, ConfigError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
    if isinstance(err, DriverError):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
    log.error("rpc failed", extra={"rpc": rpc, "error": str(err)}, exc_info=err)
    await context.abort(grpc.StatusCode.INTERNAL, f"{rpc} failed: {err}")


async def _abort_recoverable(context: Context, message: str) -> None:
    detail = any_pb2.Any()
    detail.Pack(recoverable_error_pb2.RecoverableError(recoverable=True))
    status = status_pb2.Status(
        code=code_pb2.FAILED_PRECONDITION, message=message, details=[detail]
    )
    await context.abort_with_status(rpc_status.to_status(status))


class BasePluginServicer(base_pb2_grpc.BasePluginServicer):
    def __init__(self, driver: WasmtimeDriver) -> None:
        self._driver = driver

    async def PluginInfo(
        self, request: base_pb2.PluginInfoRequest, context: Context
    ) -> base_pb2.PluginInfoResponse:
        return base_pb2.PluginInfoResponse(
            type=base_pb2.PluginType.DRIVER,
            plugin_api_versions=list(PLUGIN_API_VERSIONS),
            plugin_version=__version__,
            name=DRIVER_NAME,
        )

    async def ConfigSchema(
        self, request: base_pb2.ConfigSchemaRequest, context: Context
    ) -> base_pb2.ConfigSchemaResponse:
        return base_pb2.ConfigSchemaResponse(spec=spec_to_proto(plugin_config_spec()))

    @_translating_errors
    async def SetConfig(
        self, request: base_pb2.SetConfigRequest, context: Context
    ) -> base_pb2.SetConfigResponse:
        long_lived = request.HasField("nomad_config")
        await self._driver.set_config(request.msgpack_config, long_lived)
        return base_pb2.SetConfigResponse()


class DriverServicer(driver_pb2_grpc.DriverServicer):
    def __init__(self, driver: WasmtimeDriver) -> None:
        self._driver = driver

    async def TaskConfigSchema(
        self, request: Any, context: Context
    ) -> driver_pb2.TaskConfigSchemaResponse:
        return driver_pb2.TaskConfigSchemaResponse(
            spec=spec_to_proto(task_config_spec())
        )

    async def Capabilities(
        self, request: Any, context: Context
    ) -> driver_pb2.CapabilitiesResponse:
        # Tasks see the host's paths (NONE), so Nomad puts host paths into
        # NOMAD_TASK_DIR and friends.
        capabilities = driver_pb2.DriverCapabilities(
            send_signals=False,
            exec=False,
            fs_isolation=driver_pb2.DriverCapabilities.FSIsolation.NONE,
            mount_configs=driver_pb2.DriverCapabilities.MountConfigs.NO_MOUNTS,
        )
        return driver_pb2.CapabilitiesResponse(capabilities=capabilities)

    async def Fingerprint(
        self, request: Any, context: Context
    ) -> AsyncIterator[driver_pb2.FingerprintResponse]:
        # The stream stays open until Nomad cancels it: if it ended, Nomad
        # would open it again at once, in a loop.
        while True:
            fingerprint = await self._driver.fingerprint()
            yield _fingerprint_to_proto(fingerprint)
            await asyncio.sleep(FINGERPRINT_INTERVAL)

    async def TaskEvents(
        self, request: Any, context: Context
    ) -> AsyncIterator[driver_pb2.DriverTaskEvent]:
        async for event in self._driver.events.subscribe():
            yield task_event_to_proto(event)

    @_translating_errors
    async def StartTask(
        self, request: driver_pb2.StartTaskRequest, context: Context
    ) -> driver_pb2.StartTaskResponse:
        handle = await self._driver.tasks.start(task_request_from_proto(request.task))
        task_handle = driver_pb2.TaskHandle(
            version=TASK_HANDLE_VERSION,
            config=request.task,
            state=driver_pb2.TaskState.RUNNING,
            driver_state=_driver_state(handle),
        )
        return driver_pb2.StartTaskResponse(
            result=driver_pb2.StartTaskResponse.Result.SUCCESS, handle=task_handle
        )

    @_translating_errors
    async def WaitTask(
        self, request: driver_pb2.WaitTaskRequest, context: Context
    ) -> driver_pb2.WaitTaskResponse:
        result = await self._driver.tasks.wait(request.task_id)
        return driver_pb2.WaitTaskResponse(
            result=exit_result_to_proto(result), err=result.err
        )

    @_translating_errors
    async def StopTask(
        self, request: driver_pb2.StopTaskRequest, context: Context
    ) -> driver_pb2.StopTaskResponse:
        timeout = request.timeout.ToTimedelta().total_seconds()
        await self._driver.tasks.stop(request.task_id, timeout, request.signal)
        return driver_pb2.StopTaskResponse()

    @_translating_errors
    async def DestroyTask(
        self, request: driver_pb2.DestroyTaskRequest, context: Context
    ) -> driver_pb2.DestroyTaskResponse:
        await self._driver.tasks.destroy(request.task_id, request.force)
        return driver_pb2.DestroyTaskResponse()

    @_translating_errors
    async def InspectTask(
        self, request: driver_pb2.InspectTaskRequest, context: Context
    ) -> driver_pb2.InspectTaskResponse:
        handle = self._driver.tasks.get(request.task_id)
        return driver_pb2.InspectTaskResponse(
            task=task_status_to_proto(handle), driver=driver_pb2.TaskDriverStatus()
        )

    async def TaskStats(
        self, request: driver_pb2.TaskStatsRequest, context: Context
    ) -> AsyncIterator[driver_pb2.TaskStatsResponse]:
        interval = request.collection_interval.ToTimedelta().total_seconds()
        if interval <= 0:
            interval = DEFAULT_STATS_INTERVAL
        try:
            samples = self._driver.tasks.usage(request.task_id, interval)
            async for usage in samples:
                stats = task_stats_to_proto(request.task_id, usage)
                yield driver_pb2.TaskStatsResponse(stats=stats)
        except TaskNotFoundError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))

    @_translating_errors
    async def RecoverTask(
        self, request: driver_pb2.RecoverTaskRequest, context: Context
    ) -> driver_pb2.RecoverTaskResponse:
        # Nomad leaves task_id empty; the handle's config carries the id.
        task = task_request_from_proto(request.handle.config)
        if not task.id:
            task = dataclasses.replace(task, id=request.task_id)
        state = _decode_driver_state(request.handle.driver_state)
        # After an agent restart the handle has no task config bytes, so the
        # module path comes from the driver state.
        config = TaskConfig(module_path=str(state.get("module_path", "")))
        self._driver.tasks.recover(task, config, state)
        return driver_pb2.RecoverTaskResponse()

    async def SignalTask(self, request: Any, context: Context) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "the wasmtime driver does not support signals: WebAssembly modules "
            "cannot handle them; use `nomad alloc stop` to stop a task",
        )

    async def ExecTask(self, request: Any, context: Context) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "the wasmtime driver does not support exec: a module has no shell "
            "or processes to run a command in",
        )

    # A handler that only aborts needs no stream of responses, whatever the
    # generated base class declares.
    async def ExecTaskStreaming(  # type: ignore[override]
        self, request_iterator: Any, context: Context
    ) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "the wasmtime driver does not support `nomad alloc exec`",
        )

    async def CreateNetwork(self, request: Any, context: Context) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "the wasmtime driver does not create networks",
        )

    async def DestroyNetwork(self, request: Any, context: Context) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "the wasmtime driver does not create networks",
        )


def register_services(server: grpc.aio.Server, driver: WasmtimeDriver) -> None:
    base_pb2_grpc.add_BasePluginServicer_to_server(BasePluginServicer(driver), server)
    driver_pb2_grpc.add_DriverServicer_to_server(DriverServicer(driver), server)


def _fingerprint_to_proto(fingerprint: Fingerprint) -> driver_pb2.FingerprintResponse:
    health = driver_pb2.FingerprintResponse.HealthState
    response = driver_pb2.FingerprintResponse(
        health=health.HEALTHY if fingerprint.healthy else health.UNHEALTHY,
        health_description=fingerprint.description,
    )
    for key, value in fingerprint.attributes.items():
        response.attributes[key].CopyFrom(_attribute(value))
    return response


def _attribute(value: str | float | bool) -> attribute_pb2.Attribute:
    if isinstance(value, bool):
        return attribute_pb2.Attribute(bool_val=value)
    if isinstance(value, int):
        return attribute_pb2.Attribute(int_val=value)
    if isinstance(value, float):
        return attribute_pb2.Attribute(float_val=value)
    return attribute_pb2.Attribute(string_val=value)


def _driver_state(handle: TaskHandle) -> bytes:
    state: dict[str, object] = {
        "version": TASK_HANDLE_VERSION,
        "task_id": handle.id,
        "module_path": handle.config.module_path,
        "started_at": handle.started_at,
    }
    # The executor adds its isolation mode and what it needs to recover.
    state.update(handle.executor_state)
    return bytes(msgpack.packb(state))


def _decode_driver_state(data: bytes) -> dict[str, object]:
    """Decode driver_state; an empty or unreadable one decodes to {}."""
    if not data:
        return {}
    try:
        state = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException):
        log.warning("ignoring unreadable driver_state in a task handle")
        return {}
    return state if isinstance(state, dict) else {}
