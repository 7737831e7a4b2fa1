"""go-plugin's own gRPC services, which every plugin process serves.

The go-plugin host calls `plugin.GRPCController/Shutdown` on every kill and
SIGKILLs the process 2 s later if it has not exited. It also opens
`plugin.GRPCStdio/StreamStdio` and `plugin.GRPCBroker/StartStream` right after
the handshake; Nomad uses neither, so both streams stay open and carry
nothing. Health reports the service "plugin" as SERVING, as go-plugin's
`Ping` expects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from wasmtime_driver.protocol import (
    grpc_broker_pb2,
    grpc_broker_pb2_grpc,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2,
    grpc_stdio_pb2_grpc,
)

logger = logging.getLogger(__name__)

# The empty name is the server's overall health in the gRPC health protocol.
HEALTH_SERVICES = ("plugin", "")


class ControllerServicer(grpc_controller_pb2_grpc.GRPCControllerServicer):
    """Serve Shutdown by replying first and then starting the shutdown."""

    def __init__(self, request_shutdown: Callable[[], None]) -> None:
        self._request_shutdown = request_shutdown

    async def Shutdown(
        self,
        request: grpc_controller_pb2.Empty,
        context: grpc.aio.ServicerContext[
            grpc_controller_pb2.Empty, grpc_controller_pb2.Empty
        ],
    ) -> grpc_controller_pb2.Empty:
        logger.debug("shutdown requested by the plugin host")
        # This only sets an event, so the server stops after the reply is sent.
        self._request_shutdown()
        return grpc_controller_pb2.Empty()


class StdioServicer(grpc_stdio_pb2_grpc.GRPCStdioServicer):
    """Keep the host's stdio stream open without sending anything.

    Log output goes to stderr as hclog JSON, which the host reads directly.
    """

    def __init__(self, shutdown_requested: asyncio.Event) -> None:
        self._shutdown_requested = shutdown_requested

    async def StreamStdio(
        self,
        request: empty_pb2.Empty,
        context: grpc.aio.ServicerContext[empty_pb2.Empty, grpc_stdio_pb2.StdioData],
    ) -> AsyncIterator[grpc_stdio_pb2.StdioData]:
        # Ends on cancellation by the host or when the plugin shuts down.
        await self._shutdown_requested.wait()
        return
        yield  # an async generator that never yields a message


class BrokerServicer(grpc_broker_pb2_grpc.GRPCBrokerServicer):
    """Accept the host's broker stream and ignore whatever it sends."""

    async def StartStream(
        self,
        request_iterator: AsyncIterator[grpc_broker_pb2.ConnInfo],
        context: grpc.aio.ServicerContext[
            grpc_broker_pb2.ConnInfo, grpc_broker_pb2.ConnInfo
        ],
    ) -> AsyncIterator[grpc_broker_pb2.ConnInfo]:
        async for info in request_iterator:
            logger.debug(
                "ignoring broker message", extra={"service_id": info.service_id}
            )
        return
        yield  # an async generator that never yields a message


async def add_health(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """Register the health service with every name in HEALTH_SERVICES serving."""
    servicer = health.aio.HealthServicer()
    for name in HEALTH_SERVICES:
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer
