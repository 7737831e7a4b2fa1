"""The wasmtime driver: plugin configuration, shared engine, cache and health.

The servicer calls into this object; it owns the pieces every task shares.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import wasmtime

from . import __version__
from .cache import ModuleCache, resolve_cache_dir, validate_pre_cache
from .config import decode_plugin_config
from .engine import create_engine, engine_fingerprint
from .events import EventBroker
from .executor import ThreadExecutor
from .health import HealthCheck
from .process_executor import ProcessExecutor
from .settings import PluginConfig
from .tasks import Executor, TaskManager

log = logging.getLogger(__name__)

DRIVER_NAME = "wasmtime"
PLUGIN_API_VERSIONS = ("v0.1.0",)

# The directory, under the cache directory, of the start and result files of
# tasks in `process` isolation.
TASK_STATE_DIR = "tasks"

# Nomad's own drivers send a fingerprint every 30 seconds.
FINGERPRINT_INTERVAL = 30.0

# The health check's compiled module is stored in this directory of the
# module cache's directory.
HEALTH_DIR = "health"

AttributeValue = str | int | float | bool


@dataclass(frozen=True)
class Fingerprint:
    healthy: bool
    description: str
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


class WasmtimeDriver:
    """Everything one plugin process shares between its tasks."""

    def __init__(self, cwd: Path | None = None) -> None:
        self._cwd = cwd or Path.cwd()
        self.config = PluginConfig()
        self.events = EventBroker()
        self._engine: wasmtime.Engine | None = None
        self._cache: ModuleCache | None = None
        self._tasks: TaskManager | None = None
        self._last_health: bool | None = None
        self._health: HealthCheck | None = None

    async def set_config(self, data: bytes, long_lived: bool) -> None:
        """Decode and check the plugin config; raises ConfigError.

        Nomad validates the config in a short-lived process first
        (`long_lived` False), so only the long-lived instance builds the
        cache and pre-compiles modules.
        """
        config = decode_plugin_config(data)
        validate_pre_cache(config.cache)
        if not long_lived:
            self.config = config
            return

        if self._tasks is not None and len(self._tasks) > 0:
            # Keep reporting the settings in effect, not the rejected ones.
            log.warning(
                "plugin config changed while tasks are known; the new cache "
                "and isolation settings apply after the plugin restarts"
            )
            return
        self.config = config
        self._health = None  # the cache directory may have changed
        self._close_runtime()
        cache = self._ensure_tasks()[1]
        if config.cache.enabled and config.cache.pre_cache.enabled:
            count = await asyncio.to_thread(cache.precompile)
            log.info("pre-compiled modules", extra={"count": count})

    @property
    def tasks(self) -> TaskManager:
        return self._ensure_tasks()[0]

    async def fingerprint(self) -> Fingerprint:
        healthy, description = await asyncio.to_thread(self._check_health)
        if healthy != self._last_health:
            log_level = logging.INFO if healthy else logging.WARNING
            log.log(log_level, "driver health changed", extra={"healthy": healthy})
            self._last_health = healthy
        return Fingerprint(healthy, description, self._attributes())

    def close(self) -> None:
        self._close_runtime()

    def _ensure_tasks(self) -> tuple[TaskManager, ModuleCache]:
        if self._tasks is None or self._cache is None:
            engine = self._ensure_engine()
            settings = self.config.cache
            cache_dir = resolve_cache_dir(settings)
            self._cache = ModuleCache(engine, engine_fingerprint(), settings, cache_dir)
            executor = self._create_executor(engine, self._cache, cache_dir)
            self._tasks = TaskManager(executor, self.events)
        return self._tasks, self._cache

    def _create_executor(
        self, engine: wasmtime.Engine, cache: ModuleCache, cache_dir: Path
    ) -> Executor:
        if self.config.isolation == "process":
            # Task state sits in the cache directory, which the plugin already
            # owns and keeps across restarts, so a new plugin finds it there.
            state_dir = cache_dir / TASK_STATE_DIR
            return ProcessExecutor(self.config.cache, cache_dir, state_dir, self._cwd)
        return ThreadExecutor(engine, cache, self._cwd)

    def _ensure_engine(self) -> wasmtime.Engine:
        if self._engine is None:
            self._engine = create_engine()
        return self._engine

    def _check_health(self) -> tuple[bool, str]:
        if self._health is None:
            try:
                engine = self._ensure_engine()
            except wasmtime.WasmtimeError as err:
                return False, f"failed to create a wasmtime engine: {err}"
            settings = self.config.cache
            artifact_dir = None
            if settings.enabled:
                artifact_dir = resolve_cache_dir(settings) / HEALTH_DIR
            self._health = HealthCheck(engine, engine_fingerprint(), artifact_dir)
        return self._health.run()

    def _attributes(self) -> dict[str, AttributeValue]:
        prefix = f"driver.{DRIVER_NAME}"
        attributes: dict[str, AttributeValue] = {
            f"{prefix}.version": __version__,
            f"{prefix}.wasmtime_version": version("wasmtime"),
            f"{prefix}.isolation": self.config.isolation,
            f"{prefix}.cache.enabled": self.config.cache.enabled,
            f"{prefix}.cache.type": self.config.cache.type,
        }
        if self._cache is not None:
            stats = self._cache.stats()
            attributes[f"{prefix}.cache.hits"] = stats.hits
            attributes[f"{prefix}.cache.misses"] = stats.misses
        return attributes

    def _close_runtime(self) -> None:
        if self._tasks is not None:
            self._tasks.close()
        if self._cache is not None:
            self._cache.close()
        self._cache = None
        self._tasks = None
