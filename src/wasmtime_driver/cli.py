"""The `wasmtime-driver` executable: a Nomad plugin, or a command for people.

Started by a Nomad client agent (the magic cookie is in the environment), it
serves the plugin protocol. Started by hand, it offers `run`, which plays the
Nomad client's part for a job file on this machine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__
from .handshake import MAGIC_COOKIE_KEY

if TYPE_CHECKING:
    import argparse

    import grpc

    from .plugin_server import PluginServer

# Exit status after Ctrl-C, as shells report a process ended by SIGINT.
INTERRUPTED = 130

USAGE = """\
usage: wasmtime-driver run JOB.nomad [--config AGENT.hcl] [options]
       wasmtime-driver --version

wasmtime-driver is a HashiCorp Nomad task driver plugin that runs WebAssembly
modules on Wasmtime. A Nomad client agent starts it from its plugin_dir; jobs
use it with driver = "wasmtime".

`wasmtime-driver run JOB.nomad` runs the job's wasmtime tasks on this machine
the way a Nomad client would, and exits with the task's exit code."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run as a plugin when a Nomad agent started us, else as a command.

    A Ctrl-C that arrives before the run command installs its own handler,
    while modules still load for example, ends the process with status 130
    and no traceback.
    NOTE: a Ctrl-C while the interpreter starts, before this module is
    imported, still ends with Python's KeyboardInterrupt traceback.
    """
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        sys.stderr.write("==> interrupted\n")
        return INTERRUPTED


def _dispatch(args: list[str]) -> int:
    # Most modules, argparse and importlib.metadata included, are imported
    # here or later, where main catches a Ctrl-C, because loading them takes
    # most of the start-up time.
    if MAGIC_COOKIE_KEY in os.environ or not args:
        from .plugin_server import run_plugin

        # Nomad may pass the agent block's `args`; the plugin takes none.
        return run_plugin(_register, USAGE)

    parser = _parser()
    options = parser.parse_args(args)
    if options.version:
        from importlib.metadata import version

        print(f"wasmtime-driver {__version__} (wasmtime {version('wasmtime')})")
        return 0
    if options.command is None:
        parser.print_usage(sys.stderr)
        return 2
    return int(options.handler(options))


def _register(server: grpc.aio.Server, plugin_server: PluginServer) -> None:
    from .driver import WasmtimeDriver
    from .servicer import register_services

    driver = WasmtimeDriver()
    register_services(server, driver)

    async def close_driver() -> None:
        driver.close()

    plugin_server.add_shutdown_hook(close_driver)


def _parser() -> argparse.ArgumentParser:
    import argparse

    from .client.runner import add_run_command

    parser = argparse.ArgumentParser(
        prog="wasmtime-driver",
        description="Nomad task driver plugin that runs WebAssembly on Wasmtime.",
    )
    parser.add_argument("--version", action="store_true", help="print the version")
    subparsers = parser.add_subparsers(dest="command")
    add_run_command(subparsers)
    return parser
