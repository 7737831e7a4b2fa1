"""The process that runs one task in `process` isolation.

Started by the plugin as `python -m wasmtime_driver.shim START_FILE READY_FD`
with the task's log FIFOs as stdout and stderr. It runs the task with its own
engine and a `ModuleCache` on the plugin's cache directory. It then writes the
exit result to the result file named in the start file and exits with the
task's exit code (128 + N after a stop by signal N).

SIGINT and SIGTERM request the task's Interrupt, so running WebAssembly traps
at once. The shim writes one byte to READY_FD once it handles them. The
plugin sends a stop signal only after that byte, because until then SIGINT
may still be ignored: the plugin ignores it, and children inherit that.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import BinaryIO

import wasmtime

from .cache import ModuleCache
from .config import decode_task_config
from .engine import Interrupt, create_engine, engine_fingerprint
from .errors import ConfigError
from .handle import ExitResult
from .shim_files import ShimStart, read_start, write_result
from .task_run import TaskRuntime, report_error, run_request

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class StopWatcher:
    """Turns a stop signal into the task's Interrupt, from a thread of its own.

    Python runs signal handlers only between bytecodes of the main thread,
    which runs WebAssembly for as long as the task spins. The stop signals
    are therefore blocked and taken with `sigwait` on a separate thread.
    """

    def __init__(self) -> None:
        self.interrupt = Interrupt()
        self.signal_number = 0

    def start(self) -> None:
        # The mask must be set before any other thread starts, so that every
        # thread inherits it and only `sigwait` receives the signals.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        threading.Thread(target=self._watch, name="stop", daemon=True).start()

    def _watch(self) -> None:
        number = signal.sigwait(STOP_SIGNALS)
        self.signal_number = int(number)
        self.interrupt.request()


def main(argv: list[str]) -> int:
    watcher = StopWatcher()
    watcher.start()
    silence_logging()
    start_path, ready_fd = Path(argv[1]), int(argv[2])
    start = read_start(start_path)
    start_path.unlink(missing_ok=True)
    _signal_ready(ready_fd)
    return run_start(start, watcher)


def run_start(
    start: ShimStart, watcher: StopWatcher, engine: wasmtime.Engine | None = None
) -> int:
    """Run the task of `start`, write its result file and return the exit status.

    The task's log FIFOs must be fds 1 and 2, and `watcher` must be started.
    Without `engine`, the task gets a new one.
    """
    stdout = os.fdopen(1, "wb", buffering=0, closefd=False)
    stderr = os.fdopen(2, "wb", buffering=0, closefd=False)
    result = _run(start, watcher, engine or create_engine(), (stdout, stderr))
    write_result(start.result_path, result)
    # Exit statuses have 8 bits; the result file keeps the whole code.
    return result.exit_code & 0xFF


def _run(
    start: ShimStart,
    watcher: StopWatcher,
    engine: wasmtime.Engine,
    logs: tuple[BinaryIO, BinaryIO],
) -> ExitResult:
    try:
        config = decode_task_config(start.request.driver_config)
    except ConfigError as err:
        report_error(logs[1], str(err))
        return ExitResult(exit_code=1, err=str(err))
    # NOTE: each shim indexes the cache directory when it starts and applies
    # `size` and `entryTTL` on its own, so it may delete a file that the plugin
    # or another shim stored. That costs a compile later, never an error.
    with ModuleCache(
        engine, engine_fingerprint(), start.cache, start.cache_dir
    ) as cache:
        runtime = TaskRuntime(engine, cache, start.cwd)
        return run_request(
            runtime,
            start.request,
            config,
            watcher.interrupt,
            logs,
            lambda: watcher.signal_number,
        )


def _signal_ready(fd: int) -> None:
    # The plugin may have exited since it started the shim; the task still
    # runs, and a new plugin treats a recovered shim as ready.
    try:
        os.write(fd, b"r")
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def silence_logging() -> None:
    # The shim's stderr is the task's log, which is for the task's own output;
    # without a handler, logging would print warnings of the cache there.
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger().setLevel(logging.CRITICAL + 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
