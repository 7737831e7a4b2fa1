"""The files that the plugin and a task's shim process exchange.

The plugin writes a start file (the task request, its raw task config and the
plugin's cache settings) before it starts the shim, and the shim writes a
result file when its task ends. Both are msgpack maps. The result file is
written to a temporary name and renamed, so a reader sees either no file or
the whole result, also after a plugin restart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .atomicfile import write_atomically
from .handle import ExitResult, TaskRequest
from .settings import CacheSettings, ExpirationSettings


@dataclass(frozen=True)
class ShimStart:
    """Everything a shim needs to run its task like the plugin would."""

    request: TaskRequest
    cache: CacheSettings
    cache_dir: Path  # the plugin's cache directory, so a compiled module is a hit
    cwd: Path  # the plugin's working directory, for relative module paths
    result_path: Path


def task_file_stem(state_dir: Path, task_id: str) -> Path:
    """Return the path, without suffix, of a task's files in `state_dir`.

    Nomad's task ids contain slashes, so the name is a hash of the id.
    """
    return state_dir / hashlib.sha256(task_id.encode()).hexdigest()[:32]


def write_start(path: Path, start: ShimStart) -> None:
    request = start.request
    data = {
        "request": {
            "id": request.id,
            "name": request.name,
            "alloc_id": request.alloc_id,
            "job_name": request.job_name,
            "task_group_name": request.task_group_name,
            "alloc_dir": str(request.alloc_dir),
            "env": dict(request.env),
            "driver_config": request.driver_config,
            "memory_limit_bytes": request.memory_limit_bytes,
        },
        "cache": {
            "enabled": start.cache.enabled,
            "type": start.cache.type,
            "size": start.cache.size,
            "expiration_enabled": start.cache.expiration.enabled,
            "entry_ttl": start.cache.expiration.entry_ttl,
        },
        "cache_dir": str(start.cache_dir),
        "cwd": str(start.cwd),
        "result_path": str(start.result_path),
    }
    write_atomically(path, msgpack.packb(data))


def read_start(path: Path) -> ShimStart:
    """Read a start file; raises OSError, ValueError or TypeError when unusable."""
    data = _read(path)
    fields = data["request"]
    request = TaskRequest(
        id=fields["id"],
        name=fields["name"],
        alloc_id=fields["alloc_id"],
        job_name=fields["job_name"],
        task_group_name=fields["task_group_name"],
        alloc_dir=Path(fields["alloc_dir"]),
        # The shim never opens the logs: they arrive as its stdout and stderr.
        stdout_path="",
        stderr_path="",
        env=fields["env"],
        driver_config=fields["driver_config"],
        memory_limit_bytes=fields["memory_limit_bytes"],
    )
    cache = data["cache"]
    settings = CacheSettings(
        enabled=cache["enabled"],
        type=cache["type"],
        size=cache["size"],
        expiration=ExpirationSettings(cache["expiration_enabled"], cache["entry_ttl"]),
    )
    return ShimStart(
        request=request,
        cache=settings,
        cache_dir=Path(data["cache_dir"]),
        cwd=Path(data["cwd"]),
        result_path=Path(data["result_path"]),
    )


def write_result(path: Path, result: ExitResult) -> None:
    data = {"exit_code": result.exit_code, "signal": result.signal, "err": result.err}
    write_atomically(path, msgpack.packb(data))


def read_result(path: Path) -> ExitResult | None:
    """Return the result a shim wrote, or None when there is none (yet)."""
    try:
        data = _read(path)
        return ExitResult(
            exit_code=int(data["exit_code"]),
            signal=int(data["signal"]),
            err=str(data["err"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # NOTE: a corrupt result file is reported like a missing one, so the
        # caller falls back to the process's exit status.
        return None


def _read(path: Path) -> dict[str, Any]:
    data = msgpack.unpackb(path.read_bytes(), raw=False)
    if not isinstance(data, dict):
        raise TypeError(f"{path} contains no msgpack map")
    return data
