"""A plugin process with only go-plugin's own services, for the server tests.

Run as a script: `python tests/noop_plugin.py [OPTION...]`. Options:

    --spawn         start the plugin as a child with the same options and
                    sleep, so a test can kill this intermediate process and
                    watch the orphaned plugin exit by itself
    --hooks         add one shutdown hook that logs and one that never returns
    --stuck-thread  start a non-daemon thread that never finishes
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time

import grpc

from wasmtime_driver.hclog import format_timestamp
from wasmtime_driver.plugin_server import PluginServer, run_plugin

USAGE = "usage: noop_plugin.py [--spawn] [--hooks] [--stuck-thread]"

logger = logging.getLogger("noop_plugin")


def stray_line(writer: str) -> str:
    """Return a valid hclog line, so stray output keeps stderr all JSON."""
    entry = {
        "@level": "debug",
        "@message": f"stray output from {writer}",
        "@module": "noop_plugin",
        "@timestamp": format_timestamp(time.time()),
    }
    return json.dumps(entry) + "\n"


async def logging_hook() -> None:
    logger.info("shutdown hook ran")


async def hanging_hook() -> None:
    await asyncio.Event().wait()


def register(server: grpc.aio.Server, plugin_server: PluginServer) -> None:
    # Both writes must land on stderr, never on the handshake's stdout: one
    # through sys.stdout, one straight to fd 1 as a C library would.
    print(stray_line("print"), end="", flush=True)
    os.write(1, stray_line("fd 1").encode())
    if "--hooks" in sys.argv:
        plugin_server.add_shutdown_hook(logging_hook)
        plugin_server.add_shutdown_hook(hanging_hook)
    if "--stuck-thread" in sys.argv:
        threading.Thread(target=threading.Event().wait, name="stuck").start()


def spawn_child_and_wait() -> int:
    # The child inherits stdout and stderr, so the test reads its handshake.
    options = [arg for arg in sys.argv[1:] if arg != "--spawn"]
    subprocess.Popen([sys.executable, __file__, *options])
    time.sleep(3600)
    return 0


if __name__ == "__main__":
    if "--spawn" in sys.argv:
        sys.exit(spawn_child_and_wait())
    sys.exit(run_plugin(register, USAGE))
