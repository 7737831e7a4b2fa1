"""Benchmark the plugin's task path over its real gRPC socket.

The plugin is `build/wasmtime-driver`, started over the go-plugin handshake and
configured with SetConfig as a Nomad client does. This process plays the
client: it keeps the Fingerprint and TaskEvents streams open as Nomad does,
and for each task it creates the two log FIFOs and drains them as Nomad's
log collector (logmon) does. P1 and P3 run twice, with FIFOs and with
/dev/null as both log paths; the P4 burst uses FIFOs unless
`--burst-logs devnull` is given.

P1  StartTask, then WaitTask, one task at a time: time from sending StartTask
    to receiving the WaitTask result (DestroyTask follows, outside the time).
P3  Tasks per second with a fixed number in flight, for a fixed duration.
P4  Plugin RSS after SetConfig and the first fingerprint, then RSS, open fds
    and threads while a burst of tasks runs, and the growth per 1,000 tasks.
P5  StopTask on a task spinning in `(loop br 0)`: time from sending StopTask
    to receiving the pending WaitTask result.

Every task runs `sum.wasm` (a cache hit after the first) or `spin.wasm`. The
client runs all calls on one asyncio event loop with grpc.aio, and the FIFOs
are read with `loop.add_reader`, so one client thread keeps hundreds of tasks
in flight.

Run: .venv/bin/python bench/bench_tasks.py [--quick] [--profile DIR]
Prints a Markdown report on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import grpc
import msgpack
import psutil
import wasmtime
from google.protobuf import duration_pb2

from wasmtime_driver.client.handshake import parse_handshake, plugin_environment
from wasmtime_driver.hclog import LEVEL_ENV_VAR as LOG_LEVEL_ENV_VAR
from wasmtime_driver.protocol import (
    base_pb2,
    base_pb2_grpc,
    driver_pb2,
    driver_pb2_grpc,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
)

log = logging.getLogger("bench_tasks")

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "build" / "wasmtime-driver"

SUM_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "sum") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add))
"""
SPIN_WAT = '(module (func (export "spin") (loop br 0)))'
SUM_ARGS = [123456, 678910]
SUM_OUTPUT = b"802366\n"

RPC_TIMEOUT = 60.0  # seconds for any one RPC
EOF_TIMEOUT = 30.0  # seconds for a task's log FIFOs to reach EOF
SPIN_SETTLE = 0.05  # seconds a spinning task runs before StopTask

LOGS_FIFO = "fifo"
LOGS_DEVNULL = "devnull"

# The generated stubs are typed for grpc's blocking API. On an aio channel
# each unary method returns an awaitable, so the stubs are used untyped.
Stub = Any


@dataclass
class Plugin:
    """The plugin process under test and grpc.aio stubs for it."""

    process: asyncio.subprocess.Process
    channel: grpc.aio.Channel
    base: Stub
    driver: Stub
    stderr_lines: int = 0
    events: int = 0
    streams: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass(frozen=True)
class Sample:
    """Resource use of the plugin process at one moment."""

    tasks: int
    rss_bytes: int
    fds: int
    threads: int


@dataclass
class Results:
    """Everything the report prints."""

    latency: dict[str, list[float]] = field(default_factory=dict)
    cycle: dict[str, list[float]] = field(default_factory=dict)
    throughput: dict[str, tuple[int, float]] = field(default_factory=dict)
    in_flight: int = 0
    idle: Sample | None = None
    burst: list[Sample] = field(default_factory=list)
    burst_mode: str = LOGS_FIFO
    burst_seconds: float = 0.0
    settled: Sample | None = None
    stop_times: list[float] = field(default_factory=list)
    stop_rpc_times: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    profile: str = ""
    # CPU milliseconds per task, (plugin, client), for each measured phase.
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)
    rpc_round_trip: list[float] = field(default_factory=list)
    plugin_log_level: str = "debug"
    other_cores: float = 0.0


# Plugin process ----------------------------------------------------------


async def launch_plugin(
    cwd: Path, log_level: str, extra_env: dict[str, str] | None = None
) -> Plugin:
    """Start the plugin as go-plugin does and connect to its unix socket."""
    if not PLUGIN.exists():
        raise SystemExit(f"{PLUGIN} is missing: run `make build` first")
    process = await asyncio.create_subprocess_exec(
        str(PLUGIN),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=plugin_environment() | {LOG_LEVEL_ENV_VAR: log_level} | (extra_env or {}),
        cwd=cwd,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if not line:
        code = await asyncio.wait_for(process.wait(), 5)
        raise SystemExit(f"plugin exited with {code} before the handshake")
    handshake = parse_handshake(line.decode())
    channel = grpc.aio.insecure_channel(handshake.grpc_target)
    await asyncio.wait_for(channel.channel_ready(), 10)
    plugin = Plugin(
        process,
        channel,
        base_pb2_grpc.BasePluginStub(channel),
        driver_pb2_grpc.DriverStub(channel),
    )
    plugin.streams.append(asyncio.create_task(_count_stderr_lines(plugin)))
    return plugin


async def _count_stderr_lines(plugin: Plugin) -> None:
    # Read stderr continuously, as go-plugin does, so the plugin does not block
    # on a full pipe.
    assert plugin.process.stderr is not None
    async for _ in plugin.process.stderr:
        plugin.stderr_lines += 1


async def configure(plugin: Plugin, cache_dir: Path) -> None:
    """Send SetConfig as the long-lived instance gets it, then open the streams."""
    config = {
        "cache": {
            "enabled": True,
            "type": "lfu",
            "size": 5,
            "expiration": {"enabled": True, "entryTTL": 600},
            "preCache": {"enabled": False},
            "dir": str(cache_dir),
        }
    }
    nomad_config = base_pb2.NomadConfig(
        driver=base_pb2.NomadDriverConfig(ClientMinPort=14000, ClientMaxPort=14512)
    )
    await plugin.base.SetConfig(
        base_pb2.SetConfigRequest(
            msgpack_config=msgpack.packb(config),
            nomad_config=nomad_config,
            plugin_api_version="v0.1.0",
        ),
        timeout=RPC_TIMEOUT,
    )
    plugin.streams.append(asyncio.create_task(_follow_fingerprint(plugin)))
    plugin.streams.append(asyncio.create_task(_follow_events(plugin)))


async def _follow_fingerprint(plugin: Plugin) -> None:
    async for _ in plugin.driver.Fingerprint(driver_pb2.FingerprintRequest()):
        pass


async def _follow_events(plugin: Plugin) -> None:
    async for _ in plugin.driver.TaskEvents(driver_pb2.TaskEventsRequest()):
        plugin.events += 1


async def shutdown(plugin: Plugin) -> int:
    for stream in plugin.streams[1:]:
        stream.cancel()
    await asyncio.gather(*plugin.streams[1:], return_exceptions=True)
    controller = grpc_controller_pb2_grpc.GRPCControllerStub(plugin.channel)
    try:
        await controller.Shutdown(grpc_controller_pb2.Empty(), timeout=5)
    except grpc.RpcError:
        pass  # the process may exit before the reply arrives
    await plugin.channel.close()
    code = await asyncio.wait_for(plugin.process.wait(), 10)
    await asyncio.wait_for(plugin.streams[0], 10)  # stderr reaches EOF
    return code


class CpuMeter:
    """CPU seconds used by the plugin and by this client between two points."""

    def __init__(self, plugin: Plugin) -> None:
        self._process = psutil.Process(plugin.pid)
        self._plugin = self._plugin_seconds()
        self._client = time.process_time()

    def _plugin_seconds(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def per_task_ms(self, tasks: int) -> tuple[float, float]:
        plugin = self._plugin_seconds() - self._plugin
        client = time.process_time() - self._client
        return 1000 * plugin / max(tasks, 1), 1000 * client / max(tasks, 1)


def sample(plugin: Plugin, tasks: int) -> Sample:
    process = psutil.Process(plugin.pid)
    return Sample(
        tasks, process.memory_info().rss, process.num_fds(), process.num_threads()
    )


# Log FIFOs -----------------------------------------------------------------


class FifoLogs:
    """A task's stdout and stderr FIFOs, read on the event loop as logmon does.

    Like logmon, both FIFOs are created and opened for reading before
    StartTask. O_NONBLOCK makes the open return at once. On Linux a FIFO
    reports no hang-up until a writer has opened and closed it, so EOF is
    seen only after the driver closes its end.
    """

    def __init__(self, directory: Path, stem: str) -> None:
        self.stdout_path = directory / f".{stem}.stdout.fifo"
        self.stderr_path = directory / f".{stem}.stderr.fifo"
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._loop = asyncio.get_running_loop()
        self._pending: list[asyncio.Future[None]] = []
        for path, sink in (
            (self.stdout_path, self.stdout),
            (self.stderr_path, self.stderr),
        ):
            os.mkfifo(path, 0o600)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            done: asyncio.Future[None] = self._loop.create_future()
            self._loop.add_reader(fd, self._read, fd, sink, done)
            self._pending.append(done)

    def _read(self, fd: int, sink: bytearray, done: asyncio.Future[None]) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            sink.extend(chunk)
            return
        self._loop.remove_reader(fd)
        os.close(fd)
        done.set_result(None)

    async def wait_for_eof(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self._pending), EOF_TIMEOUT)

    def remove(self) -> None:
        self.stdout_path.unlink()
        self.stderr_path.unlink()


class DevNullLogs:
    """Both logs go to /dev/null: no FIFO work on either side."""

    stdout_path = Path(os.devnull)
    stderr_path = Path(os.devnull)
    stdout = bytearray(SUM_OUTPUT)

    async def wait_for_eof(self) -> None:
        return None

    def remove(self) -> None:
        return None


Logs = FifoLogs | DevNullLogs


# Tasks ---------------------------------------------------------------------


class TaskFactory:
    """Builds StartTask requests in one allocation directory laid out as Nomad's."""

    def __init__(self, root: Path, modules: Path) -> None:
        self.root = root
        self.logs_dir = root / "alloc" / "logs"
        for sub in ("alloc/logs", "alloc/data", "alloc/tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("local", "secrets", "private", "tmp"):
            (root / "bench" / sub).mkdir(parents=True, exist_ok=True)
        self.sum_config = _task_config(modules / "sum.wasm", "sum", SUM_ARGS)
        self.spin_config = _task_config(modules / "spin.wasm", "spin", None)
        self._numbers = itertools.count()
        self.alloc_id = str(uuid.uuid4())

    def logs(self, mode: str) -> Logs:
        if mode == LOGS_DEVNULL:
            return DevNullLogs()
        return FifoLogs(self.logs_dir, f"bench-{next(self._numbers)}")

    def request(self, config: bytes, logs: Logs) -> driver_pb2.StartTaskRequest:
        task = driver_pb2.TaskConfig(
            id=f"{self.alloc_id}/bench/{next(self._numbers):08x}",
            name="bench",
            alloc_id=self.alloc_id,
            job_name="bench",
            job_id="bench",
            task_group_name="group",
            namespace="default",
            alloc_dir=str(self.root),
            stdout_path=str(logs.stdout_path),
            stderr_path=str(logs.stderr_path),
            msgpack_driver_config=config,
            env={"NOMAD_TASK_NAME": "bench"},
        )
        return driver_pb2.StartTaskRequest(task=task)


def _task_config(path: Path, func: str, args: list[int] | None) -> bytes:
    # The shape go-cty gives Nomad's decoded value of the task's config block.
    value = {
        "ioBuffer": {"enabled": False},
        "main": {"args": args, "mainFuncName": func},
        "modulePath": str(path),
        "wasi": None,
    }
    return bytes(msgpack.packb(value))


@dataclass(frozen=True)
class TaskTiming:
    start_to_result: float  # seconds from sending StartTask to the WaitTask result
    cycle: float  # seconds from creating the logs to the DestroyTask reply


async def run_sum_task(
    plugin: Plugin, factory: TaskFactory, mode: str, results: Results
) -> TaskTiming:
    """Run one sum task the way Nomad's task runner does and check its output."""
    begin = time.perf_counter()
    logs = factory.logs(mode)
    try:
        request = factory.request(factory.sum_config, logs)
        task_id = request.task.id
        sent = time.perf_counter()
        await plugin.driver.StartTask(request, timeout=RPC_TIMEOUT)
        wait = driver_pb2.WaitTaskRequest(task_id=task_id)
        response = await plugin.driver.WaitTask(wait, timeout=RPC_TIMEOUT)
        received = time.perf_counter()
        await logs.wait_for_eof()
        destroy = driver_pb2.DestroyTaskRequest(task_id=task_id, force=True)
        await plugin.driver.DestroyTask(destroy, timeout=RPC_TIMEOUT)
        end = time.perf_counter()
    finally:
        logs.remove()
    if response.result.exit_code != 0 or response.err:
        results.failures[f"exit {response.result.exit_code}: {response.err}"] += 1
    elif bytes(logs.stdout) != SUM_OUTPUT:
        results.failures[f"stdout {bytes(logs.stdout)!r}"] += 1
    return TaskTiming(received - sent, end - begin)


# Benchmarks ----------------------------------------------------------------


async def bench_round_trip(plugin: Plugin, count: int, results: Results) -> None:
    """Measure the floor under P1: PluginInfo, the cheapest unary RPC, in sequence."""
    request = base_pb2.PluginInfoRequest()
    meter = CpuMeter(plugin)
    for _ in range(count):
        sent = time.perf_counter()
        await plugin.base.PluginInfo(request, timeout=RPC_TIMEOUT)
        results.rpc_round_trip.append(time.perf_counter() - sent)
    results.cpu["one PluginInfo RPC"] = meter.per_task_ms(count)


async def bench_latency(
    plugin: Plugin, factory: TaskFactory, mode: str, count: int, results: Results
) -> None:
    """P1: sequential tasks after a warm-up that fills the module cache."""
    for _ in range(20):
        await run_sum_task(plugin, factory, mode, results)
    meter = CpuMeter(plugin)
    timings = [await run_sum_task(plugin, factory, mode, results) for _ in range(count)]
    results.cpu[f"P1 {mode}"] = meter.per_task_ms(count)
    results.latency[mode] = [t.start_to_result for t in timings]
    results.cycle[mode] = [t.cycle for t in timings]


async def run_in_flight(
    in_flight: int,
    task: Callable[[], Awaitable[object]],
    keep_going: Callable[[int], bool],
) -> int:
    """Keep `in_flight` tasks running until `keep_going(started)` is false."""
    started = 0
    completed = 0

    async def worker() -> None:
        nonlocal started, completed
        while keep_going(started):
            started += 1
            await task()
            completed += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return completed


async def bench_throughput(
    plugin: Plugin,
    factory: TaskFactory,
    mode: str,
    in_flight: int,
    duration: float,
    results: Results,
) -> None:
    """P3: tasks completed per second with `in_flight` tasks always running."""
    warm_until = time.perf_counter() + 1.0
    await run_in_flight(
        in_flight,
        lambda: run_sum_task(plugin, factory, mode, results),
        lambda _: time.perf_counter() < warm_until,
    )
    begin = time.perf_counter()
    until = begin + duration
    meter = CpuMeter(plugin)
    completed = await run_in_flight(
        in_flight,
        lambda: run_sum_task(plugin, factory, mode, results),
        lambda _: time.perf_counter() < until,
    )
    results.cpu[f"P3 {mode}"] = meter.per_task_ms(completed)
    results.throughput[mode] = (completed, time.perf_counter() - begin)
    results.in_flight = in_flight


async def bench_memory(
    plugin: Plugin,
    factory: TaskFactory,
    mode: str,
    in_flight: int,
    total: int,
    time_limit: float,
    results: Results,
) -> None:
    """P4: resource samples every tenth of a burst of `total` tasks."""
    step = max(total // 10, 1)
    deadline = time.perf_counter() + time_limit
    done = 0
    results.burst = [sample(plugin, 0)]
    begin = time.perf_counter()
    while done < total and time.perf_counter() < deadline:
        batch = min(step, total - done)
        done += await run_in_flight(
            in_flight,
            lambda: run_sum_task(plugin, factory, mode, results),
            lambda started, batch=batch: started < batch,  # type: ignore[misc]
        )
        results.burst.append(sample(plugin, done))
        log.info("burst: %d tasks, rss %d", done, results.burst[-1].rss_bytes)
    results.burst_seconds = time.perf_counter() - begin
    results.burst_mode = mode
    await asyncio.sleep(2.0)
    results.settled = sample(plugin, done)


async def bench_stop(
    plugin: Plugin, factory: TaskFactory, count: int, results: Results
) -> None:
    """P5: StopTask on a spinning task while WaitTask is pending."""
    for _ in range(count):
        logs = factory.logs(LOGS_FIFO)
        try:
            request = factory.request(factory.spin_config, logs)
            task_id = request.task.id
            await plugin.driver.StartTask(request, timeout=RPC_TIMEOUT)
            wait = asyncio.ensure_future(
                plugin.driver.WaitTask(
                    driver_pb2.WaitTaskRequest(task_id=task_id), timeout=RPC_TIMEOUT
                )
            )
            await asyncio.sleep(SPIN_SETTLE)
            stop = driver_pb2.StopTaskRequest(
                task_id=task_id,
                timeout=duration_pb2.Duration(seconds=5),
                signal="SIGTERM",
            )
            sent = time.perf_counter()
            stopping = asyncio.ensure_future(
                plugin.driver.StopTask(stop, timeout=RPC_TIMEOUT)
            )
            response = await wait
            ended = time.perf_counter()
            await stopping
            stopped = time.perf_counter()
            await logs.wait_for_eof()
            destroy = driver_pb2.DestroyTaskRequest(task_id=task_id, force=True)
            await plugin.driver.DestroyTask(destroy, timeout=RPC_TIMEOUT)
        finally:
            logs.remove()
        if response.result.signal != 15:
            results.failures[f"spin ended with {response.result}"] += 1
        results.stop_times.append(ended - sent)
        results.stop_rpc_times.append(stopped - sent)


async def profile_plugin(
    plugin: Plugin,
    factory: TaskFactory,
    in_flight: int,
    seconds: float,
    directory: Path,
    results: Results,
) -> None:
    """Sample the plugin with py-spy (GIL holders only) while tasks run."""
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / "plugin-gil.txt"
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit(f"--profile needs py-spy at {spy}: pip install py-spy")
    command = [str(spy), "record", "--gil", "--native", "--format", "raw"]
    command += ["--rate", "100"]
    command += ["--duration", f"{seconds:g}", "--pid", str(plugin.pid)]
    command += ["--output", str(output)]
    recorder = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    until = time.perf_counter() + seconds + 2.0
    await run_in_flight(
        in_flight,
        lambda: run_sum_task(plugin, factory, LOGS_FIFO, results),
        lambda _: time.perf_counter() < until and recorder.returncode is None,
    )
    await asyncio.wait_for(recorder.wait(), 30)
    if output.exists():
        results.profile = summarize_profile(output.read_text())


def summarize_profile(collapsed: str, top: int = 12) -> str:
    """Tabulate the innermost frames and the driver's own functions.

    Only samples taken while a plugin thread held the GIL are recorded, so
    the shares show what keeps the plugin's one Python core busy.
    """
    leaves: Counter[str] = Counter()
    driver: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = _frame_names(stack)
        leaves[frames[-1]] += count
        # A recursive frame counts once per sample. The frames that start the
        # event loop are in every sample, so they are left out.
        for frame in {f for f in frames if "wasmtime_driver/" in f}:
            if not frame.startswith(_STARTUP_FRAMES):
                driver[frame] += count
    out = _share_table("innermost frame (self time)", leaves, total, top)
    out += "\n\n" + _share_table("driver function (inclusive)", driver, total, top)
    return out + f"\n\n{total} samples at 100 Hz."


_STARTUP_FRAMES = ("<module> ", "main ", "run_plugin ", "_run_loop ")


def _share_table(title: str, counts: Counter[str], total: int, top: int) -> str:
    rows = [f"| share of GIL samples | {title} |", "|---|---|"]
    for frame, count in counts.most_common(top):
        rows.append(f"| {100 * count / max(total, 1):.0f}% | `{frame}` |")
    return "\n".join(rows)


def _frame_names(stack: str) -> list[str]:
    names = []
    for frame in stack.split(";"):
        # py-spy writes "function (path/to/file.py:line)", and native frames
        # as "function (library.so)".
        name, _, location = frame.partition(" (")
        path = location.removesuffix(")").rsplit(":", 1)[0]
        names.append(f"{name} ({_short_path(path)})")
    return names


def _short_path(path: str) -> str:
    # py-spy already shortens most paths to "package/module.py".
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# Report --------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values`."""
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def machine_lines() -> list[str]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- CPUs: nproc {os.cpu_count()}, {model}",
        (
            f"- Python {platform.python_version()}, wasmtime {version('wasmtime')}, "
            f"grpcio {grpc.__version__}, Linux {platform.release()}"
        ),
        f"- Load average before the run: {load}",
    ]


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def report(results: Results, args: argparse.Namespace, lines: list[str]) -> str:
    out = ["# Task path benchmark results", "", *lines]
    out += [
        (
            f"- Plugin log level: {results.plugin_log_level}; isolation: thread "
            "(this script measures thread isolation only)"
        ),
        (
            "- CPU used by other processes on the machine during the run: "
            f"{results.other_cores:.2f} cores on average"
        ),
        "",
    ]
    out += _latency_section(results)
    out += _cpu_section(results)
    out += _throughput_section(results)
    out += _memory_section(results)
    out += _stop_section(results)
    if results.profile:
        out += ["## Profile of the plugin under load (py-spy --gil)", ""]
        out += [results.profile, ""]
    failures = sum(results.failures.values())
    out += [f"Failed tasks: {failures}."]
    for message, count in results.failures.most_common(5):
        out.append(f"- {count} x {message}")
    return "\n".join(out) + "\n"


def _latency_section(results: Results) -> list[str]:
    out = ["## P1: StartTask to WaitTask result, one task at a time", ""]
    out += ["| logs | tasks | median | p99 | max | full cycle median | goal |"]
    out += ["|---|---|---|---|---|---|---|"]
    for mode, values in results.latency.items():
        median = statistics.median(values)
        p99 = percentile(values, 0.99)
        cycle = statistics.median(results.cycle[mode])
        met = median <= 0.001 and p99 <= 0.005
        out.append(
            f"| {mode} | {len(values)} | {ms(median)} | {ms(p99)} | "
            f"{ms(max(values))} | {ms(cycle)} | {verdict(met)} |"
        )
    out += [
        "",
        (
            "Full cycle: create and open the FIFOs, StartTask, WaitTask, EOF on "
            "both FIFOs, DestroyTask."
        ),
        "",
    ]
    return out


def _cpu_section(results: Results) -> list[str]:
    out = ["CPU time per task, from the kernel's counters for each process:", ""]
    out += ["| phase | plugin | client (this script) |", "|---|---|---|"]
    for phase, (plugin, client) in results.cpu.items():
        out.append(f"| {phase} | {plugin:.3f} ms | {client:.3f} ms |")
    if results.rpc_round_trip:
        median = statistics.median(results.rpc_round_trip)
        out += [
            "",
            (
                f"Floor: one PluginInfo round trip (the cheapest unary RPC) takes "
                f"{ms(median)} (median of {len(results.rpc_round_trip)}); P1 needs "
                "two round trips."
            ),
        ]
    return [*out, ""]


def _throughput_section(results: Results) -> list[str]:
    out = [f"## P3: sustained tasks, {results.in_flight} in flight", ""]
    out += ["| logs | tasks | seconds | tasks/s | goal (>= 1,000/s) |"]
    out += ["|---|---|---|---|---|"]
    for mode, (completed, seconds) in results.throughput.items():
        rate = completed / seconds
        out.append(
            f"| {mode} | {completed} | {seconds:.1f} | {rate:,.0f} | "
            f"{verdict(rate >= 1000)} |"
        )
    return [*out, ""]


def _memory_section(results: Results) -> list[str]:
    out = ["## P4: plugin memory", ""]
    if results.idle is not None:
        idle = results.idle.rss_bytes
        out.append(
            f"Idle RSS after SetConfig and the first fingerprint: {mib(idle)} "
            f"({idle / 1e6:.1f} MB), "
            f"{results.idle.fds} fds, {results.idle.threads} threads "
            f"(goal <= 60 MB: {verdict(idle <= 60_000_000)})."
        )
        out.append("")
    if not results.burst:
        return out
    first, last = results.burst[0], results.burst[-1]
    out += [
        (
            f"Burst of {last.tasks:,} tasks ({results.burst_mode} logs, "
            f"{results.in_flight} in flight, {results.burst_seconds:.0f} s), "
            "starting after the other benchmarks had warmed the plugin up:"
        ),
        "",
        "| tasks | RSS | fds | threads |",
        "|---|---|---|---|",
    ]
    for point in results.burst:
        out.append(
            f"| {point.tasks:,} | {mib(point.rss_bytes)} | {point.fds} | "
            f"{point.threads} |"
        )
    if results.settled is not None:
        settled = results.settled
        out.append(
            f"| {settled.tasks:,}, 2 s later | {mib(settled.rss_bytes)} | "
            f"{settled.fds} | {settled.threads} |"
        )
    out.append("")
    if last.tasks > first.tasks:
        slope = rss_slope(results.burst)
        out.append(
            f"RSS trend (least-squares fit over the samples): "
            f"{slope * 1000 / 1024:+.1f} KiB per 1,000 tasks, "
            f"{mib(int(slope * 100_000))} if extrapolated to "
            f"100,000 tasks. Whole burst: {mib(last.rss_bytes - first.rss_bytes)}, "
            f"fds {last.fds - first.fds:+d}, threads {last.threads - first.threads:+d}."
            f" The burst covers {100 * last.tasks / 100_000:.0f}% of the 100,000 "
            "tasks in the goal."
        )
    return [*out, ""]


def rss_slope(samples: Sequence[Sample]) -> float:
    """Return the least-squares slope of RSS bytes over tasks run."""
    tasks = [float(point.tasks) for point in samples]
    rss = [float(point.rss_bytes) for point in samples]
    return statistics.linear_regression(tasks, rss).slope


def _stop_section(results: Results) -> list[str]:
    values = results.stop_times
    if not values:
        return []
    median = statistics.median(values)
    return [
        "## P5: StopTask on a task spinning in `(loop br 0)`",
        "",
        "| stops | median | p90 | max | StopTask reply, median | goal (<= 20 ms) |",
        "|---|---|---|---|---|---|",
        (
            f"| {len(values)} | {ms(median)} | {ms(percentile(values, 0.9))} | "
            f"{ms(max(values))} | {ms(statistics.median(results.stop_rpc_times))} | "
            f"{verdict(median <= 0.020)} |"
        ),
        "",
    ]


# Main ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="run small counts (about 20 s)"
    )
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="P3 duration in seconds"
    )
    parser.add_argument("--burst", type=int, default=20_000, help="P4 task count")
    parser.add_argument(
        "--burst-time-limit",
        type=float,
        default=120.0,
        help="P4 maximum duration in seconds",
    )
    parser.add_argument(
        "--burst-logs", choices=(LOGS_FIFO, LOGS_DEVNULL), default=LOGS_FIFO
    )
    parser.add_argument("--stops", type=int, default=50)
    parser.add_argument(
        "--plugin-log-level",
        default="debug",
        help="the plugin's log level; debug is what a Nomad agent gets by default",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also sample the plugin with py-spy for 10 s and keep the stacks in DIR",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.latency_tasks, args.duration, args.burst, args.stops = 50, 2.0, 1000, 5
    return args


async def run(args: argparse.Namespace, work: Path) -> Results:
    results = Results()
    modules = work / "modules"
    modules.mkdir()
    (modules / "sum.wasm").write_bytes(wasmtime.wat2wasm(SUM_WAT))
    (modules / "spin.wasm").write_bytes(wasmtime.wat2wasm(SPIN_WAT))
    factory = TaskFactory(work / "alloc", modules)

    results.plugin_log_level = args.plugin_log_level
    plugin = await launch_plugin(work, args.plugin_log_level)
    busy = _system_busy_seconds()
    meter = CpuMeter(plugin)
    began = time.perf_counter()
    try:
        await configure(plugin, work / "cache")
        await asyncio.sleep(1.0)  # the first fingerprint compiles a module
        results.idle = sample(plugin, 0)
        await bench_round_trip(plugin, 300, results)
        for mode in (LOGS_FIFO, LOGS_DEVNULL):
            log.info("P1 latency, %s logs", mode)
            await bench_latency(plugin, factory, mode, args.latency_tasks, results)
        log.info("P5 stop")
        await bench_stop(plugin, factory, args.stops, results)
        for mode in (LOGS_FIFO, LOGS_DEVNULL):
            log.info("P3 throughput, %s logs", mode)
            await bench_throughput(
                plugin, factory, mode, args.in_flight, args.duration, results
            )
        log.info("P4 burst of %d tasks", args.burst)
        await bench_memory(
            plugin,
            factory,
            args.burst_logs,
            args.in_flight,
            args.burst,
            args.burst_time_limit,
            results,
        )
        if args.profile is not None:
            log.info("profiling the plugin with py-spy")
            await profile_plugin(
                plugin, factory, args.in_flight, 10.0, args.profile, results
            )
        plugin_cpu, client_cpu = meter.per_task_ms(1)
        others = _system_busy_seconds() - busy - (plugin_cpu + client_cpu) / 1000
        results.other_cores = others / (time.perf_counter() - began)
    finally:
        code = await shutdown(plugin)
        log.info(
            "plugin exited with %d after %d stderr lines, %d task events",
            code,
            plugin.stderr_lines,
            plugin.events,
        )
    return results


def _system_busy_seconds() -> float:
    # Guest time is already part of user time, and steal is the hypervisor's.
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    lines = machine_lines()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as work:
        results = asyncio.run(run(args, Path(work)))
    lines.append(f"- Benchmark wall time: {time.perf_counter() - began:.0f} s")
    sys.stdout.write(report(results, args, lines))
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
