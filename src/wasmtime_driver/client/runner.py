"""The `run` command: play a Nomad client for one job file on this machine.

The plugin is launched three times as a Nomad 1.6 to 1.9 client does (see
`loader`), then every task whose driver is the plugin's name runs in its own
allocation directory (see `taskrunner`). The command exits with the task's
exit code; stdout carries only the tasks' output.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hclog import hclog_level
from ..jobspec import Job, Task, TaskGroup, load_job
from ..protocol import driver_pb2
from .agentconfig import PLUGIN_NAME, AgentConfig, load_agent_config
from .allocdir import AllocDir
from .launcher import plugin_display_name
from .loader import (
    CatalogEntry,
    ClientError,
    DriverInstance,
    encode_plugin_config,
    probe_catalog,
    start_instance,
    validate_config,
)
from .pluginlog import DEFAULT_LEVEL, LEVELS, PluginLogRelay, level_number, write_stderr
from .taskenv import Allocation
from .taskrunner import Progress, TaskOutcome, TaskRunner

logger = logging.getLogger(__name__)

# Exit status after Ctrl-C before any task started, as shells report SIGINT.
INTERRUPTED = 130
# Exit status for a failure of the command itself (job file, plugin, config).
FAILED = 1


@dataclass(frozen=True)
class RunOptions:
    """The run command's options, as parsed from the command line."""

    job_file: Path
    agent_config: Path | None = None
    plugin: Path | None = None
    alloc_dir: Path | None = None
    keep_alloc_dir: bool = False
    log_level: str = DEFAULT_LEVEL
    quiet: bool = False


def add_run_command(subparsers: Any) -> None:
    """Add the `run` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "run",
        help="run a job's wasmtime tasks on this machine as a Nomad client would",
        description=(
            "Start the plugin as a Nomad client does (three launches, the same "
            "RPCs and config encoding, log FIFOs), run every task of JOB whose "
            "driver is the plugin's, and exit with the task's exit code."
        ),
    )
    parser.add_argument("job_file", metavar="JOB", type=Path, help="job file (HCL2)")
    parser.add_argument(
        "--config",
        dest="agent_config",
        metavar="AGENT.hcl",
        type=Path,
        help=f'Nomad agent config file; its plugin "{PLUGIN_NAME}" block is used',
    )
    parser.add_argument(
        "--plugin",
        metavar="PATH",
        type=Path,
        help="plugin executable to start (default: this installation)",
    )
    parser.add_argument(
        "--alloc-dir",
        metavar="DIR",
        type=Path,
        help="directory for allocation directories, kept after the run "
        "(default: a temporary directory, removed afterwards)",
    )
    parser.add_argument(
        "--keep-alloc-dir",
        action="store_true",
        help="keep the temporary allocation directory and print its path",
    )
    parser.add_argument(
        "--log-level",
        default=DEFAULT_LEVEL,
        choices=LEVELS,
        help=f"lowest level of plugin and client logs shown (default {DEFAULT_LEVEL})",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print no progress messages"
    )
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the command for parsed arguments; return the exit status."""
    options = RunOptions(
        job_file=args.job_file,
        agent_config=args.agent_config,
        plugin=args.plugin,
        alloc_dir=args.alloc_dir,
        keep_alloc_dir=args.keep_alloc_dir,
        log_level=args.log_level,
        quiet=args.quiet,
    )
    return run(options)


def run(options: RunOptions) -> int:
    """Run a job file as described by `options`; return the exit status."""
    _configure_logging(options.log_level)
    return asyncio.run(_main(options))


def plugin_command(plugin: Path | None, agent: AgentConfig) -> list[str]:
    """Return the plugin's command line: the executable and the agent's args."""
    if plugin is None:
        base = [sys.executable, "-m", "wasmtime_driver"]
    else:
        base = [str(plugin.absolute())]
    return [*base, *agent.plugin_args]


async def _main(options: RunOptions) -> int:
    progress = Progress(options.quiet)
    session = _Session(options, progress)
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, session.interrupt, main)
    try:
        return await session.run()
    except ClientError as err:
        progress.error(f"Error: {err}")
        return FAILED
    except ConfigError as err:
        progress.error(f"Error: {err}")
        return FAILED
    except asyncio.CancelledError:
        progress.error("interrupted")
        return INTERRUPTED
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


class _Session:
    """One run: the job, the driver instance and the task runners."""

    def __init__(self, options: RunOptions, progress: Progress) -> None:
        self.options = options
        self.progress = progress
        self.stop_requested = asyncio.Event()
        self.tasks_started = False

    def interrupt(self, main: asyncio.Task[int]) -> None:
        """Stop running tasks on Ctrl-C or SIGTERM; before that, give up."""
        if self.tasks_started:
            if not self.stop_requested.is_set():
                self.stop_requested.set()
            return
        main.cancel()

    async def run(self) -> int:
        job = load_job(self.options.job_file)
        agent = (
            load_agent_config(self.options.agent_config)
            if self.options.agent_config is not None
            else AgentConfig()
        )
        command = plugin_command(self.options.plugin, agent)
        relay = PluginLogRelay(plugin_display_name(command), self.options.log_level)
        entry = await probe_catalog(command, relay)
        selected = self._select_tasks(job, entry)
        config = encode_plugin_config(entry, agent)
        if entry.config_spec is not None:
            await validate_config(command, relay, entry, config)
        instance = await start_instance(
            command,
            relay,
            entry,
            config,
            agent,
            self._print_event,
            self._print_health,
        )
        try:
            return await self._run_allocations(instance, job, selected, agent)
        finally:
            await instance.close()

    def _select_tasks(
        self, job: Job, entry: CatalogEntry
    ) -> list[tuple[TaskGroup, list[Task]]]:
        selected = []
        for group in job.groups:
            tasks = []
            for task in group.tasks:
                if task.driver == entry.name:
                    tasks.append(task)
                else:
                    self.progress.info(
                        f'skipping task "{task.name}": driver "{task.driver}" '
                        f'is not this plugin\'s "{entry.name}"'
                    )
            if tasks:
                selected.append((group, tasks))
        if not selected:
            raise ClientError(
                f'job "{job.id}" has no task with driver = "{entry.name}"'
            )
        return selected

    async def _run_allocations(
        self,
        instance: DriverInstance,
        job: Job,
        selected: list[tuple[TaskGroup, list[Task]]],
        agent: AgentConfig,
    ) -> int:
        root, temporary = self._alloc_root()
        node_id = str(uuid.uuid4())
        runners: list[TaskRunner] = []
        try:
            for group, tasks in selected:
                for index in range(group.count):
                    alloc = self._new_allocation(
                        root, job, group, index, node_id, tasks
                    )
                    alloc.alloc_dir.build(task.name for task in tasks)
                    runners += self._runners(instance, alloc, tasks, agent)
            if len(runners) > 1:
                self._note_interleaved(len(runners), root, temporary)
            self.tasks_started = True
            outcomes = await asyncio.gather(*(runner.run() for runner in runners))
        finally:
            self._clean_alloc_root(root, temporary)
        return _combined_exit_code(outcomes)

    def _new_allocation(
        self,
        root: Path,
        job: Job,
        group: TaskGroup,
        index: int,
        node_id: str,
        tasks: Sequence[Task],
    ) -> Allocation:
        alloc_id = str(uuid.uuid4())
        alloc = Allocation(
            id=alloc_id,
            index=index,
            job=job,
            group=group,
            alloc_dir=AllocDir(root / alloc_id),
            node_id=node_id,
        )
        names = ", ".join(f'"{task.name}"' for task in tasks)
        noun = "task" if len(tasks) == 1 else "tasks"
        driver = tasks[0].driver
        self.progress.info(
            f'allocation "{alloc_id[:8]}" created: {noun} {names} (driver {driver})'
        )
        return alloc

    def _runners(
        self,
        instance: DriverInstance,
        alloc: Allocation,
        tasks: Sequence[Task],
        agent: AgentConfig,
    ) -> list[TaskRunner]:
        assert instance.task_config_spec is not None
        return [
            TaskRunner(
                instance.driver,
                instance.task_config_spec,
                alloc,
                task,
                agent,
                self.progress,
                self.stop_requested,
            )
            for task in tasks
        ]

    def _note_interleaved(self, task_count: int, root: Path, temporary: bool) -> None:
        # Task output stays unlabelled on stdout because callers compare it
        # byte for byte; the per-task log files keep each task's own output.
        logs = "<alloc id>/alloc/logs/<task>.stdout.0 and .stderr.0"
        if temporary and not self.options.keep_alloc_dir:
            where = (
                "run with --keep-alloc-dir to keep each task's output in "
                f"<alloc dir>/{logs}"
            )
        else:
            where = f"each task's output is also in {root}/{logs}"
        self.progress.info(
            f"{task_count} tasks run at once, so their output lines are "
            f"interleaved here; {where}"
        )

    def _alloc_root(self) -> tuple[Path, bool]:
        if self.options.alloc_dir is not None:
            self.options.alloc_dir.mkdir(parents=True, exist_ok=True)
            return self.options.alloc_dir.absolute(), False
        return Path(tempfile.mkdtemp(prefix="wasmtime-driver-alloc-")), True

    def _clean_alloc_root(self, root: Path, temporary: bool) -> None:
        if temporary and not self.options.keep_alloc_dir:
            shutil.rmtree(root, ignore_errors=True)
        else:
            self.progress.info(f"allocation directories kept in {root}")

    def _print_event(self, event: driver_pb2.DriverTaskEvent) -> None:
        self.progress.info(f'task "{event.task_name}": {event.message}')

    def _print_health(self, fingerprint: driver_pb2.FingerprintResponse) -> None:
        state = driver_pb2.FingerprintResponse.HealthState.Name(fingerprint.health)
        self.progress.error(
            f"driver health changed to {state.lower()}: "
            f"{fingerprint.health_description}"
        )


def _combined_exit_code(outcomes: Sequence[TaskOutcome]) -> int:
    """Return the first non-zero task exit code, or 0 when every task succeeded."""
    for outcome in outcomes:
        if outcome.exit_code:
            return outcome.exit_code
    return 0


class _ReadableFormatter(logging.Formatter):
    """One line per record: time, level, logger name, message, then extras."""

    _standard = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
        "message",
        "asctime",
        "taskName",
    }

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in record.__dict__.items() if k not in self._standard}
        pairs = "".join(f" {key}={value}" for key, value in extras.items())
        level = f"[{hclog_level(record.levelno).upper()}]".ljust(7)
        when = self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z")
        line = f"{when} {level} client: {record.getMessage()}"
        return line + (f":{pairs}" if pairs else "")


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        write_stderr(self.format(record) + "\n")


def _configure_logging(level: str) -> None:
    python_levels = [5, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]
    client_logger = logging.getLogger("wasmtime_driver.client")
    client_logger.setLevel(python_levels[level_number(level)])
    if not any(isinstance(h, _StderrHandler) for h in client_logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_ReadableFormatter())
        client_logger.addHandler(handler)
    client_logger.propagate = False
