"""Decoded plugin and task configuration, as the rest of the driver uses it.

`config.py` declares the keys of Nomad's schema and turns msgpack bytes into these
objects; nothing below it knows about HCL, msgpack or protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# A number from a job, as Nomad's msgpack delivers it: an int, a float, or a
# decimal string when the value is not exactly a float64 (for example "0.1").
ConfigNumber = int | float | str

CACHE_TYPES = ("lfu", "lru", "arc", "simple")

# Isolation modes: a thread of the plugin, or an OS process per task.
ISOLATION_MODES = ("thread", "process")


@dataclass(frozen=True)
class ExpirationSettings:
    enabled: bool = True
    entry_ttl: float = 600.0  # seconds after an entry is stored


@dataclass(frozen=True)
class PreCacheSettings:
    enabled: bool = False
    modules_dir: Path | None = None


@dataclass(frozen=True)
class CacheSettings:
    enabled: bool = True
    type: str = "lfu"  # one of CACHE_TYPES
    size: int = 5  # maximum number of compiled modules kept
    expiration: ExpirationSettings = field(default_factory=ExpirationSettings)
    pre_cache: PreCacheSettings = field(default_factory=PreCacheSettings)
    dir: Path | None = None  # None: the documented default location


@dataclass(frozen=True)
class PluginConfig:
    cache: CacheSettings = field(default_factory=CacheSettings)
    isolation: str = "thread"  # one of ISOLATION_MODES


DEFAULT_MAIN_FUNC = "handle_buffer"
DEFAULT_IO_BUFFER_FUNC = "get_io_buffer_ptr"


@dataclass(frozen=True)
class MainCall:
    func_name: str = DEFAULT_MAIN_FUNC
    args: tuple[ConfigNumber, ...] = ()


@dataclass(frozen=True)
class IOBuffer:
    enabled: bool = False
    size: int = 4096  # bytes
    input_value: str = ""
    func_name: str = DEFAULT_IO_BUFFER_FUNC
    args: tuple[ConfigNumber, ...] = ()


@dataclass(frozen=True)
class WasiPreopen:
    """A directory of the allocation that a WASI module may open."""

    host_path: str  # relative to the task directory, or absolute
    guest_path: str  # the path the module opens it by
    read_only: bool = False


@dataclass(frozen=True)
class WasiSettings:
    args: tuple[str, ...] = ()  # argv after the module name
    preopens: tuple[WasiPreopen, ...] = ()


@dataclass(frozen=True)
class TaskConfig:
    module_path: str
    main: MainCall = field(default_factory=MainCall)
    io_buffer: IOBuffer = field(default_factory=IOBuffer)
    wasi: WasiSettings = field(default_factory=WasiSettings)
