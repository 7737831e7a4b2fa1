"""Measure P1, StartTask to WaitTask result, in thread and in process isolation.

For each mode the script starts `build/wasmtime-driver` over the go-plugin
handshake with the test harness, configures it with that `isolation`, and
runs `sum.wasm` one task at a time: the first task compiles the module, the
timed ones are cache hits. Each task's log FIFOs are drained as Nomad's
logmon does; DestroyTask follows each task outside the timed part.

Run: .venv/bin/python bench/bench_isolation.py [--tasks N]
Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import wasmtime

# The harness that the end-to-end tests use to start and drive the plugin.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from plugin_harness import (
    AllocDir,
    Plugin,
    configure,
    start_plugin,
    task_config_bytes,
    task_request,
)

from wasmtime_driver.protocol import driver_pb2

SUM_WAT = """
(module (func (export "sum") (param i32 i32) (result i32)
  local.get 0 local.get 1 i32.add))
"""
WARM_UP_TASKS = 3


def run_task(plugin: Plugin, work: Path, index: int, module: Path) -> float:
    """Run one sum task and return seconds from StartTask to the WaitTask result."""
    alloc = AllocDir(work / f"alloc{index}", "sum").create()
    request = task_request(alloc, task_config_bytes(str(module), "sum", [1, 2]))
    began = time.perf_counter()
    plugin.driver.StartTask(request, timeout=60)
    response = plugin.driver.WaitTask(
        driver_pb2.WaitTaskRequest(task_id=request.task.id), timeout=60
    )
    elapsed = time.perf_counter() - began
    alloc.wait_for_eof()
    plugin.driver.DestroyTask(
        driver_pb2.DestroyTaskRequest(task_id=request.task.id, force=True), timeout=60
    )
    if response.result.exit_code != 0 or bytes(alloc.stdout) != b"3\n":
        raise RuntimeError(f"task {index} failed: {response}")
    return elapsed


def measure(isolation: str, tasks: int, work: Path, module: Path) -> list[float]:
    plugin = start_plugin()
    try:
        configure(plugin, {"dir": str(work / "cache")}, isolation=isolation)
        times = [
            run_task(plugin, work / isolation, index, module)
            for index in range(WARM_UP_TASKS + tasks)
        ]
    finally:
        plugin.shutdown()
    return times[WARM_UP_TASKS:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50, help="timed tasks per mode")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as directory:
        work = Path(directory)
        module = work / "sum.wasm"
        module.write_bytes(wasmtime.wat2wasm(SUM_WAT))
        print("| isolation | tasks | median | max |")
        print("|---|---|---|---|")
        for isolation in ("thread", "process"):
            times = measure(isolation, args.tasks, work, module)
            median = statistics.median(times) * 1000
            print(
                f"| {isolation} | {len(times)} | {median:.1f} ms | "
                f"{max(times) * 1000:.1f} ms |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
