"""The directory for compiled modules when the configuration sets none."""

from __future__ import annotations

import os
from pathlib import Path

from ..settings import CacheSettings

CACHE_DIR_ENV = "WASMTIME_DRIVER_CACHE_DIR"
_APP_NAME = "nomad-wasmtime-driver"


def default_cache_dir() -> Path:
    """Return the directory for compiled modules.

    In order: `$WASMTIME_DRIVER_CACHE_DIR`; `/var/cache/nomad-wasmtime-driver`
    when running as root, as Nomad client agents usually do (the FHS place for
    data a program can regenerate); otherwise `$XDG_CACHE_HOME` or `~/.cache`,
    then `nomad-wasmtime-driver`, as the XDG base directory spec specifies.
    """
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/cache") / _APP_NAME
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / _APP_NAME
    return Path.home() / ".cache" / _APP_NAME


def resolve_cache_dir(settings: CacheSettings) -> Path:
    """Return the configured cache directory, or the default one."""
    return settings.dir if settings.dir is not None else default_cache_dir()
