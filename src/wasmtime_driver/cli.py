"""The `wasmtime-driver` executable: a Nomad plugin, or a command for people.

Started by a Nomad client agent (the magic cookie is in the environment), it
serves the plugin protocol. Started by hand, it offers `run`, which plays the
Nomad client's part for a job file on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version

import grpc

from . import __version__
from .driver import WasmtimeDriver
from .handshake import MAGIC_COOKIE_KEY
from .plugin_server import PluginServer, run_plugin
from .servicer import register_services

USAGE = """\
usage: wasmtime-driver run JOB.nomad [--config AGENT.hcl] [options]
       wasmtime-driver --version

wasmtime-driver is a HashiCorp Nomad task driver plugin that runs WebAssembly
modules on Wasmtime. A Nomad client agent starts it from its plugin_dir; jobs
use it with driver = "wasmtime".

`wasmtime-driver run JOB.nomad` runs the job's wasmtime tasks on this machine
the way a Nomad client would, and exits with the task's exit code."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run as a plugin when a Nomad agent started us, else as a command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if MAGIC_COOKIE_KEY in os.environ or not args:
        # Nomad may pass the agent block's `args`; the plugin takes none.
        return run_plugin(_register, USAGE)

    parser = _parser()
    options = parser.parse_args(args)
    if options.version:
        print(f"wasmtime-driver {__version__} (wasmtime {version('wasmtime')})")
        return 0
    if options.command is None:
        parser.print_usage(sys.stderr)
        return 2
    return int(options.handler(options))


def _register(server: grpc.aio.Server, plugin_server: PluginServer) -> None:
    driver = WasmtimeDriver()
    register_services(server, driver)

    async def close_driver() -> None:
        driver.close()

    plugin_server.add_shutdown_hook(close_driver)


def _parser() -> argparse.ArgumentParser:
    from .client.runner import add_run_command

    parser = argparse.ArgumentParser(
        prog="wasmtime-driver",
        description="Nomad task driver plugin that runs WebAssembly on Wasmtime.",
    )
    parser.add_argument("--version", action="store_true", help="print the version")
    subparsers = parser.add_subparsers(dest="command")
    add_run_command(subparsers)
    return parser
