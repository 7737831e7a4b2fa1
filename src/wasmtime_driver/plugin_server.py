"""The plugin process: go-plugin handshake, gRPC server and shutdown.

`run_plugin` owns the whole life of the process that a Nomad client agent
starts from its plugin_dir. The caller supplies a `register` function that
adds the Nomad services (BasePlugin, Driver) to the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from wasmtime_driver import plugin_services
from wasmtime_driver.handshake import (
    APP_PROTOCOL_VERSION,
    MAGIC_COOKIE_KEY,
    MAGIC_COOKIE_VALUE,
    SOCKET_DIR_ENV_VAR,
    HandshakeError,
    check_environment,
    make_socket_dir,
    reserve_stdout,
    socket_path,
    write_handshake,
)
from wasmtime_driver.hclog import configure_logging
from wasmtime_driver.protocol import (
    grpc_broker_pb2_grpc,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2_grpc,
)

__all__ = [
    "APP_PROTOCOL_VERSION",
    "MAGIC_COOKIE_KEY",
    "MAGIC_COOKIE_VALUE",
    "PluginServer",
    "Register",
    "run_plugin",
]

logger = logging.getLogger(__name__)

# go-plugin SIGKILLs the plugin 2 s after GRPCController.Shutdown, so the
# hooks and the server's grace period together stay well below that.
SHUTDOWN_HOOK_TIMEOUT = 1.0  # seconds, for all hooks together
STOP_GRACE = 0.5  # seconds for in-flight RPCs, such as the Shutdown reply
PARENT_POLL_INTERVAL = 1.0  # seconds
THREAD_JOIN_TIMEOUT = 0.3  # seconds for all leftover threads together

# The Go host sends and accepts messages up to MaxInt32 bytes. -1 is unlimited.
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]

Register = Callable[[grpc.aio.Server, "PluginServer"], None]
ShutdownHook = Callable[[], Awaitable[None]]


class PluginServer:
    """Shutdown state of the plugin process, passed to `register`."""

    def __init__(self) -> None:
        self.shutdown_requested = asyncio.Event()
        self._hooks: list[ShutdownHook] = []

    def request_shutdown(self) -> None:
        """Start the shutdown: run the hooks, then stop the server with grace."""
        self.shutdown_requested.set()

    def add_shutdown_hook(self, hook: ShutdownHook) -> None:
        """Add a coroutine function awaited before the server stops.

        All hooks run concurrently and share SHUTDOWN_HOOK_TIMEOUT. Hooks must
        not stop tasks: the next plugin process recovers them.
        """
        self._hooks.append(hook)

    async def run_shutdown_hooks(self) -> None:
        """Await every hook, cancelling those still running after the timeout."""
        if not self._hooks:
            return
        tasks = {asyncio.create_task(_call(hook)): hook for hook in self._hooks}
        done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_HOOK_TIMEOUT)
        for task in pending:
            task.cancel()
            logger.warning(
                "shutdown hook timed out",
                extra={
                    "hook": _hook_name(tasks[task]),
                    "timeout": SHUTDOWN_HOOK_TIMEOUT,
                },
            )
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                logger.error(
                    "shutdown hook failed",
                    exc_info=error,
                    extra={"hook": _hook_name(tasks[task]), "error": str(error)},
                )


async def _call(hook: ShutdownHook) -> None:
    await hook()


def _hook_name(hook: ShutdownHook) -> str:
    return getattr(hook, "__qualname__", repr(hook))


def run_plugin(register: Register, usage: str) -> int:
    """Run the plugin process until the host shuts it down and return the exit code.

    Returns 1 without starting anything, after writing `usage` to stderr, when
    the process was not started by a go-plugin host speaking app protocol 2.
    """
    try:
        check_environment(os.environ)
    except HandshakeError as err:
        _write_stderr(f"{usage.rstrip()}\n\n{err}\n")
        return 1
    handshake_fd = reserve_stdout()
    # The agent's Ctrl-C reaches the whole process group. go-plugin servers
    # ignore it and wait for GRPCController.Shutdown instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging()
    code = _run_loop(_serve(register, handshake_fd, os.getppid()))
    _exit_if_threads_linger(code)
    return code


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except OSError:
        pass


def _run_loop(main: Awaitable[int]) -> int:
    """Run `main` on a new event loop without waiting for executor threads.

    asyncio.run would wait for every thread in the default executor, so one
    blocked thread (an open() on a FIFO without a reader, say) would keep the
    process alive until go-plugin kills it.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        _cancel_remaining_tasks(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _cancel_remaining_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _exit_if_threads_linger(code: int) -> None:
    """Exit the process at once if non-daemon threads outlive the server.

    The interpreter joins such threads (executor workers included) before it
    exits, and a blocked one would hold the process until go-plugin's SIGKILL.
    """
    current = threading.current_thread()
    lingering = [t for t in threading.enumerate() if t is not current and not t.daemon]
    deadline = time.monotonic() + THREAD_JOIN_TIMEOUT
    for thread in lingering:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in lingering if t.is_alive()]
    if alive:
        logger.warning("exiting with threads still running", extra={"threads": alive})
        logging.shutdown()
        os._exit(code)


async def _serve(register: Register, handshake_fd: int, parent_pid: int) -> int:
    try:
        socket_dir = make_socket_dir()
    except OSError as err:
        logger.error(
            "failed to create the socket directory",
            extra={"error": str(err), "dir": os.environ.get(SOCKET_DIR_ENV_VAR)},
        )
        return 1
    try:
        path = socket_path(socket_dir)
        await _serve_at(path, register, handshake_fd, parent_pid)
    except HandshakeError as err:
        logger.error("failed to start plugin", extra={"error": str(err)})
        return 1
    except Exception:
        logger.exception("plugin failed")
        return 1
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    logger.info("plugin stopped", extra={"pid": os.getpid()})
    return 0


async def _serve_at(
    path: Path, register: Register, handshake_fd: int, parent_pid: int
) -> None:
    """Serve on `path` until Shutdown, SIGTERM, or the starting process dies."""
    plugin_server = PluginServer()
    loop = asyncio.get_running_loop()
    # Both are in place before the handshake, so a SIGTERM or a dying host
    # right after it still leads to a clean shutdown.
    loop.add_signal_handler(signal.SIGTERM, _on_sigterm, plugin_server)
    watcher = asyncio.create_task(_watch_parent(plugin_server, parent_pid))
    try:
        server = await _create_server(register, plugin_server)
        try:
            await _run_server(server, path, handshake_fd, plugin_server)
        finally:
            await server.stop(STOP_GRACE)
    finally:
        watcher.cancel()
        loop.remove_signal_handler(signal.SIGTERM)


async def _run_server(
    server: grpc.aio.Server,
    path: Path,
    handshake_fd: int,
    plugin_server: PluginServer,
) -> None:
    """Listen on `path`, announce it to the host and serve until shutdown."""
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    # The host connects as soon as it reads the line, so it comes only after
    # the server is listening.
    write_handshake(handshake_fd, path)
    logger.info("plugin started", extra={"socket": str(path), "pid": os.getpid()})
    await plugin_server.shutdown_requested.wait()
    logger.info("plugin stopping", extra={"pid": os.getpid()})
    await plugin_server.run_shutdown_hooks()


async def _create_server(
    register: Register, plugin_server: PluginServer
) -> grpc.aio.Server:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    health_servicer = await plugin_services.add_health(server)
    plugin_server.add_shutdown_hook(health_servicer.enter_graceful_shutdown)
    grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(
        plugin_services.ControllerServicer(plugin_server.request_shutdown), server
    )
    grpc_stdio_pb2_grpc.add_GRPCStdioServicer_to_server(
        plugin_services.StdioServicer(plugin_server.shutdown_requested), server
    )
    grpc_broker_pb2_grpc.add_GRPCBrokerServicer_to_server(
        plugin_services.BrokerServicer(), server
    )
    register(server, plugin_server)
    return server


def _on_sigterm(plugin_server: PluginServer) -> None:
    logger.info("received SIGTERM, shutting down")
    plugin_server.request_shutdown()


async def _watch_parent(plugin_server: PluginServer, parent_pid: int) -> None:
    """Request shutdown once the process that started the plugin has exited.

    An orphan is re-parented (to init or a subreaper), so a changed parent
    pid means the go-plugin host is gone and no one will call Shutdown.
    """
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_POLL_INTERVAL)
    logger.warning(
        "plugin host exited, shutting down",
        extra={"parent_pid": parent_pid, "pid": os.getpid()},
    )
    plugin_server.request_shutdown()
