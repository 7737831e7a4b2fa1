"""Checks and discovery for `cache.preCache`: modules compiled at plugin start."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ConfigError
from ..settings import CacheSettings

logger = logging.getLogger(__name__)


def find_modules(modules_dir: Path) -> list[Path]:
    """Return every `*.wasm` file under `modules_dir`, recursively, sorted.

    Symbolic links to directories are not followed, so a link cycle cannot
    make the walk endless.
    """
    found: list[Path] = []
    for parent, _dirs, files in os.walk(modules_dir):
        for name in files:
            path = Path(parent) / name
            if name.endswith(".wasm") and path.is_file():
                found.append(path)
    return sorted(found)


def validate_pre_cache(settings: CacheSettings) -> None:
    """Check `cache.preCache` as the original driver did; raises ConfigError.

    The directory must exist and hold no more modules than `cache.size`,
    because pre-compiled modules beyond it would be evicted at once.
    """
    pre_cache = settings.pre_cache
    if not pre_cache.enabled:
        return
    if not settings.enabled:
        logger.warning("cache.preCache is ignored because cache.enabled is false")
        return
    modules_dir = pre_cache.modules_dir
    if modules_dir is None or not str(modules_dir):
        raise ConfigError(
            "cache.preCache.modulesDir is missing: set it to the directory of the"
            " modules to pre-compile, or set cache.preCache.enabled = false"
        )
    if not modules_dir.is_dir():
        problem = "is not a directory" if modules_dir.exists() else "does not exist"
        raise ConfigError(
            f"cache.preCache.modulesDir {str(modules_dir)!r} {problem}: set it to"
            " an existing directory of modules"
        )
    count = len(find_modules(modules_dir))
    if count > settings.size:
        raise ConfigError(
            f"cache.preCache.modulesDir {str(modules_dir)!r} contains {count} modules"
            f" (*.wasm, counted recursively) but cache.size is {settings.size}:"
            f" set cache.size to at least {count} or move modules out of the"
            " directory"
        )
